package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/engine"
)

// DrainResult is the drain scenario's JSON.
type DrainResult struct {
	Scenario          string  `json:"scenario"`
	Records           int     `json:"records"`
	Keys              int     `json:"keys"`
	Partitions        int     `json:"partitions"`
	Instances         int     `json:"instances"`
	PublishDelayMS    float64 `json:"publish_delay_ms"`
	Concurrency       int     `json:"instance_concurrency"`
	Tracing           string  `json:"tracing"`
	Seconds           float64 `json:"seconds"`
	RecordsPerSec     float64 `json:"records_per_sec"`
	PeakRSSMB         float64 `json:"peak_rss_mb"`
	Baseline          string  `json:"baseline,omitempty"`
	BaselineSeconds   float64 `json:"baseline_seconds,omitempty"`
	BaselineRecPerSec float64 `json:"baseline_records_per_sec,omitempty"`
	Ratio             float64 `json:"ratio,omitempty"`
}

func openPool(ctx context.Context, o options, conns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(o.databaseURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL unreachable (start it with .ci/services postgres): %w", err)
	}
	return pool, nil
}

func runDrain(ctx context.Context, o options, out io.Writer) (*DrainResult, error) {
	o.records = orInt(o.records, 200000)
	o.keys = orInt(o.keys, 1000)
	o.publishDelay = orDur(o.publishDelay, 0)
	n := 1
	if o.instances != "" {
		var err error
		if n, err = strconv.Atoi(o.instances); err != nil || n < 1 {
			return nil, fmt.Errorf("--instances %q: want a positive number", o.instances)
		}
	}
	pool, err := openPool(ctx, o, 8)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	res, err := drainOnce(ctx, pool, o, n, out)
	if err != nil {
		return nil, err
	}
	if o.baseline == "watermill-forwarder" {
		secs, err := forwarderDrain(ctx, pool, o, out)
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		res.Baseline = o.baseline
		res.BaselineSeconds = secs
		res.BaselineRecPerSec = float64(o.records) / secs
		res.Ratio = res.RecordsPerSec / res.BaselineRecPerSec
		fmt.Fprintf(out, "%-28s %10d records %8.2fs %10.0f rec/s\n", "watermill forwarder", o.records, secs, res.BaselineRecPerSec)
		fmt.Fprintf(out, "%-28s %.1fx\n", "postrelay / forwarder", res.Ratio)
	}
	return res, nil
}

// drainOnce starts n relays, commits the preload in one transaction, and
// times until the records table is empty.
func drainOnce(ctx context.Context, pool *pgxpool.Pool, o options, n int, out io.Writer) (*DrainResult, error) {
	cfg, cleanup, err := benchSchema(ctx, pool, o)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	procs, err := startRelays(ctx, pool, o, cfg, n)
	if err != nil {
		return nil, err
	}
	defer stopRelays(procs)

	// Preload in one transaction: the relays see nothing until it commits.
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	w := engine.NewWriter(cfg)
	const chunk = 20000
	recs := make([]engine.Record, 0, chunk)
	payload := []byte(`{"order_id":123456,"amount_cents":4200,"currency":"EUR","status":"paid"}`)
	for i := 0; i < o.records; i++ {
		recs = append(recs, engine.Record{Topic: "bench.orders", Key: "customer-" + strconv.Itoa(i%o.keys), Payload: payload})
		if len(recs) == chunk || i == o.records-1 {
			if err := w.Write(ctx, tx, recs...); err != nil {
				_ = tx.Rollback(ctx)
				return nil, err
			}
			recs = recs[:0]
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	tbl := pgx.Identifier{cfg.Schema, "records"}.Sanitize()
	last := start
	for {
		// EXISTS walks the primary key from its low end, cheap even on a
		// large table; a count(*) every few ms would steal PostgreSQL's CPU
		// from the relays.
		var more bool
		if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+tbl+" ORDER BY id LIMIT 1)").Scan(&more); err != nil {
			return nil, err
		}
		if !more {
			break
		}
		if time.Since(last) >= 2*time.Second {
			last = time.Now()
			var left int
			if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+tbl).Scan(&left); err != nil {
				return nil, err
			}
			done := o.records - left
			fmt.Fprintf(out, "  … %d relays: %d/%d relayed (%.0f rec/s)\n", n, done, o.records, float64(done)/time.Since(start).Seconds())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	secs := time.Since(start).Seconds()
	res := &DrainResult{
		Scenario: "drain", Records: o.records, Keys: o.keys, Partitions: o.partitions, Instances: n,
		PublishDelayMS: float64(o.publishDelay) / float64(time.Millisecond), Concurrency: o.concurrency, Tracing: o.tracing,
		Seconds: secs, RecordsPerSec: float64(o.records) / secs, PeakRSSMB: peakRSSMB(procs),
	}
	fmt.Fprintf(out, "%-28s %10d records %8.2fs %10.0f rec/s  peak RSS %.0f MB\n",
		fmt.Sprintf("postrelay, %d relay(s)", n), o.records, secs, res.RecordsPerSec, res.PeakRSSMB)
	return res, nil
}
