package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
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
	// History rows are batches (schema version 6): a batch holds the
	// records one partition delivered in one completion statement, encoded
	// by the relay (history_format.go), and batches overlap in id range (a
	// partition's records interleave with other partitions' ids, a retried
	// record delivered late widens its batch). A page is every selected
	// record with an id in (cursor, horizon], where the horizon is the
	// first_id of the batch, in first_id order after the cursor, at which
	// the batches from the cursor on hold PageSize records: every record in
	// that range lies in a batch whose first_id is at most the horizon and
	// at least cursor - span, span being the widest batch of the window.
	// SQL selects the batches by their bounds (and delivery day); the
	// records are decoded and filtered here, and a page sorted by id.
	history := cfg.ident("history")
	const batchCols = "SELECT b.partition, b.first_id, b.last_id, b.n, b.records FROM "
	var q replayQuery
	q.sql = batchCols + history + " b WHERE " + q.batches(f) + " AND b.last_id > " + q.arg(f.AfterID)
	if err := readBatches(ctx, pool, q.sql, q.args, func(r historyRecord) {
		if r.ID > f.AfterID && f.selects(r) {
			prog.Total++
		}
	}); err != nil {
		return prog, fmt.Errorf("postrelay: replay: count history: %w", err)
	}
	var span int64
	q = replayQuery{}
	q.sql = "SELECT coalesce(max(b.last_id - b.first_id), 0) FROM " + history + " b WHERE " + q.batches(f) + " AND b.last_id > " + q.arg(f.AfterID)
	if err := pool.QueryRow(ctx, q.sql, q.args...).Scan(&span); err != nil {
		return prog, fmt.Errorf("postrelay: replay: read history: %w", err)
	}
	// The next horizon after a cursor, and the batches of the page up to it.
	horizon := func(cursor int64) (string, []any) {
		var q replayQuery
		return "SELECT first_id FROM (SELECT b.first_id, sum(b.n) OVER (ORDER BY b.first_id) AS upto FROM " + history + " b WHERE " +
			q.batches(f) + " AND b.first_id > " + q.arg(cursor) + ") x WHERE upto >= " + q.arg(opts.PageSize) + " ORDER BY first_id LIMIT 1", q.args
	}
	page := func(cursor, horizon int64) (string, []any) {
		var q replayQuery
		return batchCols + history + " b WHERE " + q.batches(f) +
			" AND b.first_id > " + q.arg(cursor-span) + " AND b.first_id <= " + q.arg(horizon) + " AND b.last_id > " + q.arg(cursor), q.args
	}
	start := time.Now()
	prog.LastID = f.AfterID
	var recs []historyRecord
	for cursor := f.AfterID; cursor < math.MaxInt64; {
		upto := int64(math.MaxInt64)
		hq, hargs := horizon(cursor)
		if err := pool.QueryRow(ctx, hq, hargs...).Scan(&upto); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return prog, fmt.Errorf("postrelay: replay: read history after id %d: %w", cursor, err)
		}
		pq, pargs := page(cursor, upto)
		recs = recs[:0]
		if err := readBatches(ctx, pool, pq, pargs, func(r historyRecord) {
			if r.ID > cursor && r.ID <= upto && f.selects(r) {
				recs = append(recs, r)
			}
		}); err != nil {
			return prog, fmt.Errorf("postrelay: replay: read history after id %d: %w", cursor, err)
		}
		cursor = upto
		slices.SortFunc(recs, func(a, b historyRecord) int { return cmp.Compare(a.ID, b.ID) })
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
			md, err := DecodeMetadata([]byte(r.Metadata))
			if err != nil {
				return prog, fmt.Errorf("postrelay: replay: record %d: %w", r.ID, err)
			}
			if md == nil {
				md = map[string]string{}
			}
			md[MetadataKey] = r.Key
			md[MetadataRecordID] = strconv.FormatInt(r.ID, 10)
			md[MetadataPartition] = strconv.Itoa(r.Partition)
			md[MetadataReplay] = "true"
			msg := message.NewMessage(r.MessageID, r.Payload)
			msg.Metadata = md
			pctx, cancel := context.WithTimeout(ctx, cfg.PublishTimeout)
			msg.SetContext(pctx)
			err = pub.Publish(r.Topic, msg)
			cancel()
			if err != nil {
				return prog, fmt.Errorf("postrelay: replay: publish record %d (topic %q, key %q, message %s) after %d of %d: %w (resume after id %d)",
					r.ID, r.Topic, r.Key, r.MessageID, prog.Published, prog.Total, err, prog.LastID)
			}
			prog.Published++
			prog.LastID = r.ID
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

// selects reports whether the filter selects a batch's record by its
// topic, key and creation time (ids are the caller's).
func (f ReplayFilter) selects(r historyRecord) bool {
	return (f.Topic == "" || r.Topic == f.Topic) &&
		(f.Key == "" || r.Key == f.Key) &&
		(f.Since.IsZero() || !r.CreatedAt.Before(f.Since)) &&
		(f.Until.IsZero() || r.CreatedAt.Before(f.Until))
}

// readBatches runs a query of history batches (partition, first_id,
// last_id, n, records) and calls fn for each record of each batch, one
// batch in memory at a time. A batch that does not decode, holds other
// than n records or a record outside [first_id, last_id] (which Replay's
// paging relies on) is an error naming the batch.
func readBatches(ctx context.Context, pool *pgxpool.Pool, sql string, args []any, fn func(historyRecord)) error {
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var (
		partition   int
		first, last int64
		n           int
		records     pgtype.DriverBytes // valid until the next row; decodeHistory copies
	)
	for rows.Next() {
		if err := rows.Scan(&partition, &first, &last, &n, &records); err != nil {
			return err
		}
		got := 0
		err := decodeHistory(records, func(r historyRecord) error {
			if r.ID < first || r.ID > last {
				return fmt.Errorf("record %d outside the batch's ids %d to %d", r.ID, first, last)
			}
			got++
			fn(r)
			return nil
		})
		if err == nil && got != n {
			err = fmt.Errorf("%d records, the batch row says %d", got, n)
		}
		if err != nil {
			return fmt.Errorf("history batch of partition %d from id %d: %w", partition, first, err)
		}
	}
	return rows.Err()
}
