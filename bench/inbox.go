package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/postrelay/postrelay/adapters/inbox"
)

// InboxResult is the inbox scenario's JSON (go run ./bench inbox).
type InboxResult struct {
	Scenario         string  `json:"scenario"`
	Clients          int     `json:"clients"`
	MsgPerSecWithout float64 `json:"msg_per_sec_without_inbox"`
	MsgPerSecWith    float64 `json:"msg_per_sec_with_inbox"`
	// OverheadPct is the time per message added, from the medians:
	// rate without / rate with - 1.
	OverheadPct float64 `json:"overhead_pct"`
	// MedianRoundCostPct is the median of the same figure per round pair
	// (each pair ran back to back).
	MedianRoundCostPct float64 `json:"median_round_cost_pct"`
	UsPerMsgWithout    float64 `json:"us_per_msg_without_inbox"`
	UsPerMsgWith       float64 `json:"us_per_msg_with_inbox"`
	DuplicatesPerSec   float64 `json:"duplicates_per_sec"`
	// Interleaved calls (each client alternates the two handlers): median
	// call durations and their difference.
	CallUsWithout      float64 `json:"call_us_without_inbox"`
	CallUsWith         float64 `json:"call_us_with_inbox"`
	CallCostPct        float64 `json:"call_cost_pct"`
	RoundsEachVariant  int     `json:"rounds_each_variant"`
	SecondsEachRound   float64 `json:"seconds_each_round"`
	PurgedRows         int64   `json:"purged_rows"`
	PurgeSeconds       float64 `json:"purge_seconds"`
	PurgeBatch         int     `json:"purge_batch"`
	MsgPerSecDuringPur float64 `json:"msg_per_sec_during_purge"`
	// MsgPerSecBeforePurge is the same load for --duration just before.
	MsgPerSecBeforePurge float64 `json:"msg_per_sec_before_purge"`
}

// runInbox measures what the inbox costs a consumer: a handler doing one
// INSERT in its own transaction, without the inbox and through
// inbox.Handler (claim + INSERT + COMMIT), in alternating rounds of
// --clients concurrent handlers over unique messages; then redeliveries of
// processed messages (duplicates); then a purge of every id, with the
// handler load running, and the handler rate meanwhile.
func runInbox(ctx context.Context, o options, out io.Writer) (*InboxResult, error) {
	if o.duration <= 0 {
		o.duration = 5 * time.Second
	}
	pool, err := openPool(ctx, o, int32(o.clients+2))
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	var b [4]byte
	_, _ = rand.Read(b[:])
	schema := "bench_inbox_" + hex.EncodeToString(b[:])
	if err := inbox.Migrate(ctx, pool, schema); err != nil {
		return nil, err
	}
	defer func() {
		if !o.keepSchema {
			_, _ = pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		}
	}()
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+effects+" (id bigserial PRIMARY KEY, message_id text NOT NULL, amount int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return nil, err
	}
	const purgeBatch = 5000
	ib, err := inbox.New(ctx, pool, inbox.Config{Consumer: "bench", Schema: schema, PurgeBatch: purgeBatch})
	if err != nil {
		return nil, err
	}
	insert := func(msg *message.Message, tx pgx.Tx) error {
		_, err := tx.Exec(msg.Context(), "INSERT INTO "+effects+" (message_id, amount) VALUES ($1, $2)", msg.UUID, 4200)
		return err
	}
	withInbox := ib.Handler(insert)
	without := func(msg *message.Message) error {
		return pgx.BeginFunc(msg.Context(), pool, func(tx pgx.Tx) error { return insert(msg, tx) })
	}
	var seq atomic.Int64
	// round runs h over --clients goroutines for d; ids returns each
	// message's UUID.
	round := func(parent context.Context, d time.Duration, h message.NoPublishHandlerFunc, id func() string) (float64, error) {
		var n atomic.Int64
		var firstErr atomic.Value
		rctx, cancel := context.WithTimeout(parent, d)
		defer cancel()
		var wg sync.WaitGroup
		start := time.Now()
		for range o.clients {
			wg.Go(func() {
				for rctx.Err() == nil {
					m := message.NewMessage(id(), []byte(`{"amount_cents":4200}`))
					m.SetContext(rctx)
					if err := h(m); err != nil {
						if rctx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
						}
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			return 0, err
		}
		return float64(n.Load()) / time.Since(start).Seconds(), nil
	}
	unique := func() string { return "m-" + strconv.FormatInt(seq.Add(1), 10) }
	const rounds = 5
	var xs, ys []float64
	for r := range rounds {
		x, err := round(ctx, o.duration, without, unique)
		if err != nil {
			return nil, err
		}
		y, err := round(ctx, o.duration, withInbox, unique)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "  round %d: %8.0f msg/s without inbox, %8.0f with inbox\n", r+1, x, y)
		xs, ys = append(xs, x), append(ys, y)
	}
	a, c := median(xs), median(ys)
	var costs []float64 // per round: with / without - 1, in %
	for i := range xs {
		costs = append(costs, (xs[i]/ys[i]-1)*100)
	}
	// Interleaved: each client alternates the two handlers message by
	// message and times every call, so both see the same machine load; the
	// medians of the call durations are compared.
	var mu sync.Mutex
	var dWithout, dWith []float64
	{
		rctx, cancel := context.WithTimeout(ctx, 2*o.duration)
		var wg sync.WaitGroup
		for range o.clients {
			wg.Go(func() {
				var a, b []float64
				for i := 0; rctx.Err() == nil; i++ {
					m := message.NewMessage(unique(), []byte(`{"amount_cents":4200}`))
					m.SetContext(rctx)
					h := without
					if i%2 == 1 {
						h = withInbox
					}
					start := time.Now()
					if err := h(m); err != nil {
						break // the round's end (context) or a failure the rounds above would have shown
					}
					d := float64(time.Since(start).Microseconds())
					if i%2 == 1 {
						b = append(b, d)
					} else {
						a = append(a, d)
					}
				}
				mu.Lock()
				dWithout, dWith = append(dWithout, a...), append(dWith, b...)
				mu.Unlock()
			})
		}
		wg.Wait()
		cancel()
	}
	res0 := median(dWithout)
	res1 := median(dWith)
	fmt.Fprintf(out, "  interleaved calls: median %6.0f us without inbox (n=%d), %6.0f us with (n=%d): %+.1f %%\n",
		res0, len(dWithout), res1, len(dWith), (res1/res0-1)*100)

	processed := seq.Load() // ids so far; the with-inbox rounds applied about half
	var dupSeq atomic.Int64
	dups, err := round(ctx, o.duration, withInbox, func() string {
		// Only ids the with-inbox rounds applied are duplicates; the others
		// are applied now (a few), which the rate includes.
		return "m-" + strconv.FormatInt(1+dupSeq.Add(1)%processed, 10)
	})
	if err != nil {
		return nil, err
	}
	res := &InboxResult{Scenario: "inbox", Clients: o.clients, MsgPerSecWithout: a, MsgPerSecWith: c,
		OverheadPct: (a/c - 1) * 100, MedianRoundCostPct: median(costs), UsPerMsgWithout: float64(o.clients) / a * 1e6, UsPerMsgWith: float64(o.clients) / c * 1e6,
		DuplicatesPerSec: dups, CallUsWithout: res0, CallUsWith: res1, CallCostPct: (res1/res0 - 1) * 100, RoundsEachVariant: rounds, SecondsEachRound: o.duration.Seconds(), PurgeBatch: purgeBatch}
	fmt.Fprintf(out, "%-52s %8.0f msg/s (%6.0f us per message per client)\n%-52s %8.0f msg/s (%6.0f us; %+.1f %% time per message; median of round pairs %+.1f %%)\n%-52s %8.0f msg/s\n",
		"handler: one INSERT in its own transaction", a, res.UsPerMsgWithout,
		"  through inbox.Handler (claim + INSERT + COMMIT)", c, res.UsPerMsgWith, res.OverheadPct, res.MedianRoundCostPct,
		"  redeliveries of processed messages (duplicates)", dups)

	// Purge: purgeRows ids older than the retention (written in one
	// statement, not measured), purged while the handler load runs; the
	// handler rate just before and during the purge.
	const purgeRows = 200000
	processedTable := pgx.Identifier{schema, "processed"}.Sanitize()
	if _, err := pool.Exec(ctx, "INSERT INTO "+processedTable+" (consumer, message_id, processed_at) "+
		"SELECT 'bench', 'old-'||i, now() - interval '8 days' - i * interval '1 ms' FROM generate_series(1, $1) i", purgeRows); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+processedTable); err != nil {
		return nil, err
	}
	before, err := round(ctx, o.duration, withInbox, unique)
	if err != nil {
		return nil, err
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan float64, 1)
	go func() {
		r, _ := round(loadCtx, time.Hour, withInbox, unique)
		loadDone <- r
	}()
	start := time.Now()
	purged, err := ib.Purge(ctx)
	res.PurgeSeconds = time.Since(start).Seconds()
	stopLoad()
	res.MsgPerSecDuringPur = <-loadDone
	if err != nil {
		return nil, err
	}
	res.PurgedRows = purged
	res.MsgPerSecBeforePurge = before
	fmt.Fprintf(out, "%-52s %8d rows in %.2f s (%.0f rows/s, batches of %d)\n%-52s %8.0f msg/s (%.0f just before it)\n", "purge (with the handler load running)",
		purged, res.PurgeSeconds, float64(purged)/res.PurgeSeconds, purgeBatch, "  inbox handler rate during the purge", res.MsgPerSecDuringPur, before)
	return res, nil
}
