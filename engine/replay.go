package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MetadataReplay is set to "true" on every message Replay publishes.
const MetadataReplay = "postrelay_replay"

// ReplayFilter selects history records (see Config.Retention). Records are
// selected by their creation time (when the writer's transaction wrote
// them); zero fields select everything.
type ReplayFilter struct {
	Topic   string    // only this topic; "" for all
	Key     string    // only this key; "" for all
	Since   time.Time // created at or after; zero for no lower bound
	Until   time.Time // created before; zero for no upper bound
	AfterID int64     // only ids above this, to resume a replay; 0 for all
}

// ReplayOptions tune Replay.
type ReplayOptions struct {
	// Rate bounds the records published per second; 0 means no bound.
	Rate float64
	// Progress, if set, is called after each published record.
	Progress func(ReplayProgress)
	// PageSize is how many records one query reads. Defaults to 500.
	PageSize int
}

// ReplayProgress is where a replay is.
type ReplayProgress struct {
	Published int   // records published so far
	Total     int   // records selected when the replay started
	LastID    int64 // id of the last record published (resume with AfterID)
}

// Replay re-publishes the history records f selects to pub, one at a time
// in id order (so each key's records go in their original order), with
// their original message ids (an inbox drops what it already applied),
// topics, payloads and metadata, plus MetadataReplay = "true". A failed
// Publish stops the replay; the error names the record, and AfterID =
// ReplayProgress.LastID resumes after the last one published.
func Replay(ctx context.Context, pool *pgxpool.Pool, cfg Config, pub message.Publisher, f ReplayFilter, opts ReplayOptions) (ReplayProgress, error) {
	var prog ReplayProgress
	cfg, err := cfg.prepared()
	if err != nil {
		return prog, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return prog, fmt.Errorf("%w: replay window: Until %v is not after Since %v", ErrInvalidConfig, f.Until, f.Since)
	}
	if opts.Rate < 0 {
		return prog, fmt.Errorf("%w: replay Rate = %v: must not be negative", ErrInvalidConfig, opts.Rate)
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	// History rows are batches (schema version 5): a batch holds the
	// records one completion statement delivered, and batches overlap in
	// id range (a batch spans the ids of its partitions, a retried record
	// delivered late widens its batch). A page is every selected record
	// with an id in (cursor, horizon], where the horizon is the first_id
	// of the batch, in first_id order after the cursor, at which the
	// batches from the cursor on hold PageSize records: every record in
	// that range lies in a batch whose first_id is at most the horizon and
	// at least cursor - span, span being the widest batch of the window.
	history := cfg.ident("history")
	unnest := " FROM " + history + " b CROSS JOIN LATERAL unnest(b.ids, b.partitions, b.keys, b.topics, b.message_ids, b.payloads, b.metadata, b.created_at)" +
		" AS r(id, partition, key, topic, message_id, payload, metadata, created_at)"
	var q replayQuery
	q.sql = "SELECT count(*)" + unnest + " WHERE " + q.batches(f) + " AND " + q.records(f) + " AND b.last_id > " + q.arg(f.AfterID) + " AND r.id > " + q.arg(f.AfterID)
	if err := pool.QueryRow(ctx, q.sql, q.args...).Scan(&prog.Total); err != nil {
		return prog, fmt.Errorf("postrelay: replay: count history: %w", err)
	}
	var span int64
	q = replayQuery{}
	q.sql = "SELECT coalesce(max(b.last_id - b.first_id), 0) FROM " + history + " b WHERE " + q.batches(f) + " AND b.last_id > " + q.arg(f.AfterID)
	if err := pool.QueryRow(ctx, q.sql, q.args...).Scan(&span); err != nil {
		return prog, fmt.Errorf("postrelay: replay: read history: %w", err)
	}
	// The next horizon after a cursor, and the page up to it.
	horizon := func(cursor int64) (string, []any) {
		var q replayQuery
		return "SELECT first_id FROM (SELECT b.first_id, sum(b.n) OVER (ORDER BY b.first_id) AS upto FROM " + history + " b WHERE " +
			q.batches(f) + " AND b.first_id > " + q.arg(cursor) + ") x WHERE upto >= " + q.arg(opts.PageSize) + " ORDER BY first_id LIMIT 1", q.args
	}
	page := func(cursor, horizon int64) (string, []any) {
		var q replayQuery
		c, h := q.arg(cursor), q.arg(horizon)
		return "SELECT r.id, r.partition, r.key, r.topic, r.message_id, r.payload, r.metadata::text" + unnest + " WHERE " + q.batches(f) + " AND " + q.records(f) +
			" AND b.first_id > " + q.arg(cursor-span) + " AND b.first_id <= " + h + " AND b.last_id > " + c +
			" AND r.id > " + c + " AND r.id <= " + h + " ORDER BY r.id", q.args
	}
	start := time.Now()
	prog.LastID = f.AfterID
	for cursor := f.AfterID; cursor < math.MaxInt64; {
		upto := int64(math.MaxInt64)
		hq, hargs := horizon(cursor)
		if err := pool.QueryRow(ctx, hq, hargs...).Scan(&upto); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return prog, fmt.Errorf("postrelay: replay: read history after id %d: %w", cursor, err)
		}
		pq, pargs := page(cursor, upto)
		rows, err := pool.Query(ctx, pq, pargs...)
		if err != nil {
			return prog, fmt.Errorf("postrelay: replay: read history after id %d: %w", cursor, err)
		}
		cursor = upto
		type rec struct {
			id        int64
			partition int
			key       string
			topic     string
			messageID string
			payload   []byte
			metadata  string
		}
		var recs []rec
		for rows.Next() {
			var r rec
			if err := rows.Scan(&r.id, &r.partition, &r.key, &r.topic, &r.messageID, &r.payload, &r.metadata); err != nil {
				rows.Close()
				return prog, fmt.Errorf("postrelay: replay: read history: %w", err)
			}
			recs = append(recs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return prog, fmt.Errorf("postrelay: replay: read history after id %d: %w", prog.LastID, err)
		}
		for _, r := range recs {
			if opts.Rate > 0 {
				due := start.Add(time.Duration(float64(prog.Published) / opts.Rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-ctx.Done():
						t.Stop()
						return prog, context.Cause(ctx)
					case <-t.C:
					}
				}
			}
			md, err := DecodeMetadata([]byte(r.metadata))
			if err != nil {
				return prog, fmt.Errorf("postrelay: replay: record %d: %w", r.id, err)
			}
			if md == nil {
				md = map[string]string{}
			}
			md[MetadataKey] = r.key
			md[MetadataRecordID] = strconv.FormatInt(r.id, 10)
			md[MetadataPartition] = strconv.Itoa(r.partition)
			md[MetadataReplay] = "true"
			msg := message.NewMessage(r.messageID, r.payload)
			msg.Metadata = md
			pctx, cancel := context.WithTimeout(ctx, cfg.PublishTimeout)
			msg.SetContext(pctx)
			err = pub.Publish(r.topic, msg)
			cancel()
			if err != nil {
				return prog, fmt.Errorf("postrelay: replay: publish record %d (topic %q, key %q, message %s) after %d of %d: %w (resume after id %d)",
					r.id, r.topic, r.key, r.messageID, prog.Published, prog.Total, err, prog.LastID)
			}
			prog.Published++
			prog.LastID = r.id
			if opts.Progress != nil {
				opts.Progress(prog)
			}
		}
	}
	return prog, nil
}

// replayQuery builds a query's conditions from fixed fragments; values
// travel as parameters.
type replayQuery struct {
	sql  string
	args []any
}

// arg adds a parameter and returns its placeholder.
func (q *replayQuery) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

// batches is the filter's condition on history batches (b): their
// creation-time bounds, and delivery no earlier than Since, which lets
// PostgreSQL skip older day partitions (a record created at Since was
// delivered at or after it).
func (q *replayQuery) batches(f ReplayFilter) string {
	conds := []string{"true"}
	if !f.Since.IsZero() {
		s := q.arg(f.Since)
		conds = append(conds, "b.max_created_at >= "+s+" AND b.delivered_at >= "+s)
	}
	if !f.Until.IsZero() {
		conds = append(conds, "b.min_created_at < "+q.arg(f.Until))
	}
	return strings.Join(conds, " AND ")
}

// records is the filter's condition on the batches' records (r).
func (q *replayQuery) records(f ReplayFilter) string {
	conds := []string{"true"}
	if f.Topic != "" {
		conds = append(conds, "r.topic = "+q.arg(f.Topic))
	}
	if f.Key != "" {
		conds = append(conds, "r.key = "+q.arg(f.Key))
	}
	if !f.Since.IsZero() {
		conds = append(conds, "r.created_at >= "+q.arg(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "r.created_at < "+q.arg(f.Until))
	}
	return strings.Join(conds, " AND ")
}
