package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
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
	where, args := replayWhere(f)
	history := cfg.ident("history")
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+history+" WHERE "+where+" AND id > $"+strconv.Itoa(len(args)+1),
		append(args, f.AfterID)...).Scan(&prog.Total); err != nil {
		return prog, fmt.Errorf("postrelay: replay: count history: %w", err)
	}
	page := "SELECT id, partition, key, topic, message_id, payload, metadata::text FROM " + history +
		" WHERE " + where + " AND id > $" + strconv.Itoa(len(args)+1) + " ORDER BY id LIMIT " + strconv.Itoa(opts.PageSize)
	start := time.Now()
	prog.LastID = f.AfterID
	for {
		rows, err := pool.Query(ctx, page, append(args, prog.LastID)...)
		if err != nil {
			return prog, fmt.Errorf("postrelay: replay: read history after id %d: %w", prog.LastID, err)
		}
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
		if len(recs) == 0 {
			return prog, nil
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
}

// replayWhere builds the filter's condition from fixed fragments; values
// travel as parameters.
func replayWhere(f ReplayFilter) (string, []any) {
	conds := []string{"true"}
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if f.Topic != "" {
		add("topic = $?", f.Topic)
	}
	if f.Key != "" {
		add("key = $?", f.Key)
	}
	if !f.Since.IsZero() {
		// A record created at Since was delivered at or after it: the
		// second condition lets PostgreSQL skip older day partitions.
		add("created_at >= $? AND delivered_at >= $?", f.Since)
	}
	if !f.Until.IsZero() {
		add("created_at < $?", f.Until)
	}
	return strings.Join(conds, " AND "), args
}
