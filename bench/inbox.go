package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
	// Interleaved calls (each client cycles through the handlers): median
	// call durations and their difference to the handler without inbox.
	CallUsWithout float64 `json:"call_us_without_inbox"`
	CallUsWith    float64 `json:"call_us_with_inbox"`
	CallCostPct   float64 `json:"call_cost_pct"`
	// The claim in a round trip of its own after BEGIN (the inbox's
	// transaction before the claim was sent with BEGIN), replicated here.
	CallUsClaimAlone   float64 `json:"call_us_claim_own_round_trip"`
	CallCostPctAlone   float64 `json:"call_cost_pct_claim_own_round_trip"`
	RoundsEachVariant  int     `json:"rounds_each_variant"`
	SecondsEachRound   float64 `json:"seconds_each_round"`
	PurgedRows         int64   `json:"purged_rows"`
	PurgeSeconds       float64 `json:"purge_seconds"`
	PurgeBatch         int     `json:"purge_batch"`
	MsgPerSecDuringPur float64 `json:"msg_per_sec_during_purge"`
	// MsgPerSecBeforePurge is the same load for --duration just before.
	MsgPerSecBeforePurge float64 `json:"msg_per_sec_before_purge"`
	// Durations of the with-inbox handler calls just before and during
	// the purge: a claim waiting on the purge's locks would show in p99
	// and max.
	CallP50UsBeforePurge float64 `json:"call_p50_us_before_purge"`
	CallP99UsBeforePurge float64 `json:"call_p99_us_before_purge"`
	CallMaxUsBeforePurge float64 `json:"call_max_us_before_purge"`
	CallP50UsDuringPurge float64 `json:"call_p50_us_during_purge"`
	CallP99UsDuringPurge float64 `json:"call_p99_us_during_purge"`
	CallMaxUsDuringPurge float64 `json:"call_max_us_during_purge"`
	// What the handlers' sessions wait on, sampled in pg_stat_activity
	// just before and during the purge: a Lock wait would be a claim
	// waiting on the purge's locks.
	WaitsBeforePurge waitStats `json:"waits_before_purge"`
	WaitsDuringPurge waitStats `json:"waits_during_purge"`
}

// waitStats summarizes samples of the handler sessions' waits.
type waitStats struct {
	Samples int `json:"samples"`
	// LockSamples is how many samples saw a handler session waiting on a
	// heavyweight lock (wait_event_type Lock); MaxLock the most at once.
	LockSamples int `json:"lock_samples"`
	MaxLock     int `json:"max_lock"`
	// Mean handler sessions per sample waiting on LWLocks and on I/O
	// (WAL flushes among them), and active without waiting (CPU).
	MeanLWLock float64 `json:"mean_lwlock"`
	MeanIO     float64 `json:"mean_io"`
	MeanCPU    float64 `json:"mean_cpu"`
	// LockEvents counts the Lock waits seen by wait_event (extend,
	// transactionid, tuple…).
	LockEvents map[string]int `json:"lock_events,omitempty"`
}

func (w waitStats) String() string {
	return fmt.Sprintf("Lock in %d of %d samples (max %d at once; %v), on average %.1f LWLock / %.1f IO / %.1f on CPU",
		w.LockSamples, w.Samples, w.MaxLock, w.LockEvents, w.MeanLWLock, w.MeanIO, w.MeanCPU)
}

// sampleWaits samples every 10 ms, until ctx ends, what the active
// sessions named app wait on, leaving out the purge's own statements.
func sampleWaits(ctx context.Context, url, app string) (waitStats, error) {
	conn, err := pgx.Connect(context.WithoutCancel(ctx), url)
	if err != nil {
		return waitStats{}, err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var w waitStats
	var lw, io, cpu int
	for ctx.Err() == nil {
		var lock, l, i, c int
		var events []string
		err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'),
			count(*) FILTER (WHERE wait_event_type = 'LWLock'), count(*) FILTER (WHERE wait_event_type = 'IO'),
			count(*) FILTER (WHERE wait_event_type IS NULL),
			coalesce(array_agg(wait_event) FILTER (WHERE wait_event_type = 'Lock'), '{}')
			FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()
			AND query NOT LIKE 'DELETE FROM%' AND query NOT LIKE '%pg_try_advisory_xact_lock%'`, app).Scan(&lock, &l, &i, &c, &events)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return w, err
		}
		w.Samples++
		if lock > 0 {
			w.LockSamples++
		}
		w.MaxLock = max(w.MaxLock, lock)
		for _, e := range events {
			if w.LockEvents == nil {
				w.LockEvents = map[string]int{}
			}
			w.LockEvents[e]++
		}
		lw, io, cpu = lw+l, io+i, cpu+c
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	if w.Samples > 0 {
		n := float64(w.Samples)
		w.MeanLWLock, w.MeanIO, w.MeanCPU = float64(lw)/n, float64(io)/n, float64(cpu)/n
	}
	return w, nil
}

// callQuantiles returns the p50, p99 and maximum of call durations (µs).
func callQuantiles(us []float64) (p50, p99, maxUs float64) {
	if len(us) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(us)
	slices.Sort(s)
	at := func(q float64) float64 { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

// runInbox measures what the inbox costs a consumer: a handler doing one
// INSERT in its own transaction (BEGIN, INSERT, COMMIT), without the inbox
// and through inbox.Handler (BEGIN + claim in one round trip, INSERT,
// COMMIT), on one pool with --clients concurrent handlers over unique
// messages: alternating throughput rounds, then interleaved timed calls
// (which also time the claim in a round trip of its own, the inbox's
// earlier shape); then redeliveries of processed messages (duplicates);
// then a purge of expired ids with the handler load running, and the
// handler rate and call durations meanwhile.
func runInbox(ctx context.Context, o options, out io.Writer) (*InboxResult, error) {
	if o.duration <= 0 {
		o.duration = 5 * time.Second
	}
	// The handlers' sessions carry an application_name of their own, so
	// the purge's sampler finds them.
	const app = "postrelay-bench-inbox"
	pcfg, err := pgxpool.ParseConfig(o.databaseURL)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = int32(o.clients + 2)
	pcfg.ConnConfig.RuntimeParams["application_name"] = app
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return nil, fmt.Errorf("PostgreSQL unreachable (start it with .ci/services postgres): %w", err)
	}
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
	// Both handlers run the same transaction around the same INSERT, on
	// the same pool: the difference is the claim.
	without := func(msg *message.Message) error {
		return pgx.BeginFunc(msg.Context(), pool, func(tx pgx.Tx) error { return insert(msg, tx) })
	}
	// claimAlone replicates the inbox's transaction before the claim was
	// sent with BEGIN: BEGIN, then the claim in a round trip of its own.
	processedTable := pgx.Identifier{schema, "processed"}.Sanitize()
	claimSQL := "INSERT INTO " + processedTable + " (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
	claimAlone := func(msg *message.Message) error {
		return pgx.BeginFunc(msg.Context(), pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(msg.Context(), claimSQL, "bench", msg.UUID)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			return insert(msg, tx)
		})
	}
	var seq atomic.Int64
	// round runs h over --clients goroutines for d; ids returns each
	// message's UUID. It returns the rate and every call's duration (µs).
	round := func(parent context.Context, d time.Duration, h message.NoPublishHandlerFunc, id func() string) (float64, []float64, error) {
		var n atomic.Int64
		var firstErr atomic.Value
		rctx, cancel := context.WithTimeout(parent, d)
		defer cancel()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var calls []float64
		start := time.Now()
		for range o.clients {
			wg.Go(func() {
				var mine []float64
				defer func() {
					mu.Lock()
					calls = append(calls, mine...)
					mu.Unlock()
				}()
				for rctx.Err() == nil {
					m := message.NewMessage(id(), []byte(`{"amount_cents":4200}`))
					m.SetContext(rctx)
					t0 := time.Now()
					if err := h(m); err != nil {
						if rctx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
						}
						return
					}
					mine = append(mine, float64(time.Since(t0).Microseconds()))
					n.Add(1)
				}
			})
		}
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			return 0, nil, err
		}
		if n.Load() == 0 && parent.Err() == nil {
			return 0, nil, fmt.Errorf("inbox: a round of %s completed no message: use a longer --duration", d)
		}
		return float64(n.Load()) / time.Since(start).Seconds(), calls, nil
	}
	unique := func() string { return "m-" + strconv.FormatInt(seq.Add(1), 10) }
	const rounds = 5
	var xs, ys []float64
	for r := range rounds {
		x, _, err := round(ctx, o.duration, without, unique)
		if err != nil {
			return nil, err
		}
		y, _, err := round(ctx, o.duration, withInbox, unique)
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
	// Interleaved: each client cycles through the handlers message by
	// message (without inbox, the claim in its own round trip, the inbox)
	// and times every call, so all see the same machine load; the medians
	// of the call durations are compared.
	handlers := []message.NoPublishHandlerFunc{without, claimAlone, withInbox}
	var mu sync.Mutex
	durs := make([][]float64, len(handlers))
	{
		rctx, cancel := context.WithTimeout(ctx, 2*o.duration)
		var wg sync.WaitGroup
		for c := range o.clients {
			wg.Go(func() {
				mine := make([][]float64, len(handlers))
				for i := c; rctx.Err() == nil; i++ { // clients start at different handlers
					k := i % len(handlers)
					m := message.NewMessage(unique(), []byte(`{"amount_cents":4200}`))
					m.SetContext(rctx)
					start := time.Now()
					if err := handlers[k](m); err != nil {
						break // the round's end (context) or a failure the rounds above would have shown
					}
					mine[k] = append(mine[k], float64(time.Since(start).Microseconds()))
				}
				mu.Lock()
				for k := range durs {
					durs[k] = append(durs[k], mine[k]...)
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		cancel()
	}
	for k, d := range durs {
		if len(d) == 0 {
			return nil, fmt.Errorf("inbox: no interleaved call of handler %d completed in %s: use a longer --duration", k, 2*o.duration)
		}
	}
	res0, resAlone, res1 := median(durs[0]), median(durs[1]), median(durs[2])
	fmt.Fprintf(out, "  interleaved calls: median %6.0f us without inbox (n=%d), %6.0f us with (n=%d): %+.1f %%; claim in its own round trip %6.0f us (n=%d): %+.1f %%\n",
		res0, len(durs[0]), res1, len(durs[2]), (res1/res0-1)*100, resAlone, len(durs[1]), (resAlone/res0-1)*100)

	processed := seq.Load() // ids so far; the with-inbox rounds applied about half
	var dupSeq atomic.Int64
	dups, _, err := round(ctx, o.duration, withInbox, func() string {
		// Only ids the with-inbox rounds applied are duplicates; the others
		// are applied now (a few), which the rate includes.
		return "m-" + strconv.FormatInt(1+dupSeq.Add(1)%processed, 10)
	})
	if err != nil {
		return nil, err
	}
	res := &InboxResult{Scenario: "inbox", Clients: o.clients, MsgPerSecWithout: a, MsgPerSecWith: c,
		OverheadPct: (a/c - 1) * 100, MedianRoundCostPct: median(costs), UsPerMsgWithout: float64(o.clients) / a * 1e6, UsPerMsgWith: float64(o.clients) / c * 1e6,
		DuplicatesPerSec: dups, CallUsWithout: res0, CallUsWith: res1, CallCostPct: (res1/res0 - 1) * 100,
		CallUsClaimAlone: resAlone, CallCostPctAlone: (resAlone/res0 - 1) * 100, RoundsEachVariant: rounds, SecondsEachRound: o.duration.Seconds(), PurgeBatch: purgeBatch}
	fmt.Fprintf(out, "%-52s %8.0f msg/s (%6.0f us per message per client)\n%-52s %8.0f msg/s (%6.0f us; %+.1f %% time per message; median of round pairs %+.1f %%)\n%-52s %8.0f msg/s\n",
		"handler: one INSERT in its own transaction", a, res.UsPerMsgWithout,
		"  through inbox.Handler (BEGIN+claim, INSERT, COMMIT)", c, res.UsPerMsgWith, res.OverheadPct, res.MedianRoundCostPct,
		"  redeliveries of processed messages (duplicates)", dups)

	// Purge: purgeRows ids older than the retention (written in one
	// statement, not measured), purged while the handler load runs; the
	// handler rate just before and during the purge.
	const purgeRows = 200000
	if _, err := pool.Exec(ctx, "INSERT INTO "+processedTable+" (consumer, message_id, processed_at) "+
		"SELECT 'bench', 'old-'||i, now() - interval '8 days' - i * interval '1 ms' FROM generate_series(1, $1) i", purgeRows); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+processedTable); err != nil {
		return nil, err
	}
	// sample runs sampleWaits until the returned stop is called.
	sample := func() (stop func() (waitStats, error)) {
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		var w waitStats
		var err error
		go func() { w, err = sampleWaits(sctx, o.databaseURL, app); close(done) }()
		return func() (waitStats, error) { cancel(); <-done; return w, err }
	}
	stopSampling := sample()
	before, callsBefore, err := round(ctx, o.duration, withInbox, unique)
	waits, serr := stopSampling()
	if err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	res.WaitsBeforePurge = waits
	stopSampling = sample()
	loadCtx, stopLoad := context.WithCancel(ctx)
	var during float64
	var callsDuring []float64
	loadDone := make(chan struct{})
	go func() {
		during, callsDuring, _ = round(loadCtx, time.Hour, withInbox, unique)
		close(loadDone)
	}()
	start := time.Now()
	purged, err := ib.Purge(ctx)
	res.PurgeSeconds = time.Since(start).Seconds()
	res.WaitsDuringPurge, serr = stopSampling()
	stopLoad()
	<-loadDone
	res.MsgPerSecDuringPur = during
	if err != nil {
		return nil, err
	}
	res.CallP50UsBeforePurge, res.CallP99UsBeforePurge, res.CallMaxUsBeforePurge = callQuantiles(callsBefore)
	if serr != nil {
		return nil, serr
	}
	res.CallP50UsDuringPurge, res.CallP99UsDuringPurge, res.CallMaxUsDuringPurge = callQuantiles(callsDuring)
	res.PurgedRows = purged
	res.MsgPerSecBeforePurge = before
	fmt.Fprintf(out, "%-52s %8d rows in %.2f s (%.0f rows/s, batches of %d)\n%-52s %8.0f msg/s (%.0f just before it)\n", "purge (with the handler load running)",
		purged, res.PurgeSeconds, float64(purged)/res.PurgeSeconds, purgeBatch, "  inbox handler rate during the purge", res.MsgPerSecDuringPur, before)
	fmt.Fprintf(out, "%-52s p50 %6.0f / p99 %6.0f / max %6.0f us (just before: %6.0f / %6.0f / %6.0f)\n", "  inbox handler calls during the purge",
		res.CallP50UsDuringPurge, res.CallP99UsDuringPurge, res.CallMaxUsDuringPurge, res.CallP50UsBeforePurge, res.CallP99UsBeforePurge, res.CallMaxUsBeforePurge)
	fmt.Fprintf(out, "  handler sessions' waits during the purge:  %s\n  just before it:                            %s\n", res.WaitsDuringPurge, res.WaitsBeforePurge)
	return res, nil
}
