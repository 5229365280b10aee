package inbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Run purges the consumer's expired message ids every PurgeInterval until
// ctx ends; it returns nil then. A failed purge is logged and tried again
// at the next interval. Run is optional: `postrelay inbox purge` (or
// Purge) from a cron job does the same.
func (ib *Inbox) Run(ctx context.Context) error {
	t := time.NewTicker(ib.cfg.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := ib.Purge(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			ib.cfg.Logger.Warn("inbox: purge failed", "consumer", ib.cfg.Consumer, "err", err)
		case n > 0:
			ib.cfg.Logger.Info("inbox: purged", "consumer", ib.cfg.Consumer, "rows", n)
		}
	}
}

// Purge deletes the consumer's message ids older than Retention, in
// batches of at most PurgeBatch rows, each its own short transaction, and
// returns how many it deleted. Concurrent purges of one consumer do not
// overlap: a purge that finds another running returns 0 at once.
func (ib *Inbox) Purge(ctx context.Context) (int64, error) {
	n, err := purge(ctx, ib.pool, ib.cfg.Schema, ib.cfg.Consumer, ib.cfg.Retention, ib.cfg.PurgeBatch)
	if n > 0 {
		ib.m.purged.Add(ctx, n, ib.m.attrs)
	}
	return n, err
}

// PurgeParams are the arguments of PurgeConsumers.
type PurgeParams struct {
	// Schema is the inbox schema. Defaults to SchemaDefault.
	Schema string
	// Consumers are the names to purge; empty means every registered one.
	// A name never registered fails with ErrUnknownConsumer.
	Consumers []string
	// Retention overrides each consumer's registered retention if set.
	Retention time.Duration
	// Batch is the most rows one statement deletes. Defaults to
	// PurgeBatchDefault.
	Batch int
	// MeterProvider, if set, records the purged counter.
	MeterProvider metric.MeterProvider
}

// PurgeConsumers purges registered consumers with their own retention
// (what `postrelay inbox purge` runs) and returns the rows deleted per
// consumer.
func PurgeConsumers(ctx context.Context, pool *pgxpool.Pool, p PurgeParams) (map[string]int64, error) {
	if p.Schema == "" {
		p.Schema = SchemaDefault
	}
	if err := validateSchema(p.Schema); err != nil {
		return nil, err
	}
	if p.Batch == 0 {
		p.Batch = PurgeBatchDefault
	}
	rows, err := pool.Query(ctx, "SELECT name, retention FROM "+ident(p.Schema, "consumers")+" ORDER BY name")
	if err != nil {
		return nil, notMigrated(err, p.Schema, "consumers")
	}
	registered := map[string]time.Duration{}
	var names []string
	var name string
	var ret time.Duration
	if _, err := pgx.ForEachRow(rows, []any{&name, &ret}, func() error {
		registered[name] = ret
		names = append(names, name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("inbox: read consumers of schema %q: %w", p.Schema, err)
	}
	if len(p.Consumers) > 0 {
		for _, c := range p.Consumers {
			if _, ok := registered[c]; !ok {
				return nil, fmt.Errorf("%w: %q is not registered in schema %q (registered: %q)", ErrUnknownConsumer, c, p.Schema, names)
			}
		}
		names = p.Consumers
	}
	out := map[string]int64{}
	for _, c := range names {
		r := registered[c]
		if p.Retention > 0 {
			r = p.Retention
		}
		n, err := purge(ctx, pool, p.Schema, c, r, p.Batch)
		out[c] = n
		if p.MeterProvider != nil && n > 0 {
			if ctr, cerr := p.MeterProvider.Meter(ScopeName).Int64Counter(MetricPurged); cerr == nil {
				ctr.Add(ctx, n, metric.WithAttributes(attribute.String("consumer", c)))
			}
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// purge deletes one consumer's rows older than retention (database clock)
// in batches. Each batch is one transaction holding a transaction-scoped
// advisory lock of the consumer (tried, not waited for) and row locks on
// the rows it deletes only: claims of new messages never wait for it.
func purge(ctx context.Context, pool *pgxpool.Pool, schema, consumer string, retention time.Duration, batch int) (int64, error) {
	table := ident(schema, "processed")
	del := "DELETE FROM " + table + " WHERE ctid = ANY(ARRAY(SELECT ctid FROM " + table +
		" WHERE consumer = $1 AND processed_at < now() - $2::interval ORDER BY processed_at LIMIT $3))"
	var total int64
	for {
		var n int64
		locked := true
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock(hashtext('postrelay.inbox.purge'), hashtext($1))", schema+"."+consumer).Scan(&locked); err != nil {
				return err
			}
			if !locked {
				return nil
			}
			tag, err := tx.Exec(ctx, del, consumer, retention, batch)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("inbox: purge consumer %q in schema %q: %w", consumer, schema, notMigrated(err, schema, "processed"))
		}
		total += n
		if !locked || n < int64(batch) {
			break
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
	if total > 0 {
		if _, err := pool.Exec(ctx, "UPDATE "+ident(schema, "consumers")+" SET purged_at = now() WHERE name = $1", consumer); err != nil {
			return total, fmt.Errorf("inbox: purge consumer %q in schema %q: %w", consumer, schema, err)
		}
	}
	return total, nil
}
