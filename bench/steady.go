package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/engine"
)

// Steady load: the same producers drive every system. Each producer
// transaction is BEGIN, one business INSERT (a small orders row), the
// system's record (postrelay Writer.Write, a River job through
// Client.InsertTx, a message through Watermill's forwarder publisher, or for
// "plain" the outbox record's columns into a plain table), COMMIT. Latency
// is taken from just before the business INSERT to the in-memory
// publisher's Publish call, the same point for every system; the latency
// from just before COMMIT is reported as well ("from COMMIT").

// Systems a steady-load measurement can run.
const (
	sysPostrelay = "postrelay"
	sysRiver     = "river"
	sysForwarder = "watermill-forwarder"
	// sysPlain writes the outbox record's bytes into a plain table (no
	// relay): the reference for what the record itself costs the COMMIT.
	sysPlain = "plain-table"
	// sysRetention is postrelay with Retention (--retention, else 24h):
	// --baseline postrelay-retention alternates it with plain postrelay.
	sysRetention = "postrelay-retention"
)

// parseBaselines parses --baseline: a comma list of river and
// watermill-forwarder, in the order they are to run.
func parseBaselines(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		switch f {
		case "":
		case sysRiver, sysForwarder, sysRetention:
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		default:
			return nil, fmt.Errorf("--baseline %q: unknown system %q (want river, watermill-forwarder, postrelay-retention, comma separated)", s, f)
		}
	}
	return out, nil
}

// parseRates parses --rate: one rate or a comma list.
func parseRates(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--rate %q: %q is not a positive number of records per second", s, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// SystemRun is one system's measurement in one round.
type SystemRun struct {
	System       string  `json:"system"`
	Round        int     `json:"round"`
	TargetRate   int     `json:"target_rate"`
	AchievedRate float64 `json:"achieved_rate"` // committed producer transactions per second
	Samples      int     `json:"samples"`       // committed records seen published
	// From just before the business INSERT to Publish.
	P50MS float64 `json:"p50_ms"`
	P90MS float64 `json:"p90_ms"`
	P99MS float64 `json:"p99_ms"`
	MaxMS float64 `json:"max_ms"`
	// From just before COMMIT to Publish.
	FromCommitP50MS float64 `json:"from_commit_p50_ms"`
	FromCommitP99MS float64 `json:"from_commit_p99_ms"`
	FromCommitMaxMS float64 `json:"from_commit_max_ms"`
	// From COMMIT's return to Publish: the relay's own delay, without the
	// producer's WAL flush.
	AfterCommitP50MS float64 `json:"after_commit_p50_ms"`
	AfterCommitP99MS float64 `json:"after_commit_p99_ms"`
	// The COMMIT statement's own duration.
	CommitP50MS float64 `json:"commit_p50_ms"`
	CommitP99MS float64 `json:"commit_p99_ms"`
	CommitMaxMS float64 `json:"commit_max_ms"`
	// Machine CPU (producers, relay, PostgreSQL, everything else running)
	// per committed record over the measured window.
	CPUPerRecordUS float64 `json:"cpu_us_per_record"`
	// This process's CPU (producers, an in-process relay or peer) and its
	// PostgreSQL backends' per committed record (ownCPU): what a shared
	// machine's other work does not inflate.
	OwnCPUPerRecordUS float64 `json:"own_cpu_us_per_record"`
	// Of that, this process's (the rest is its PostgreSQL backends').
	ProcessCPUPerRecordUS float64 `json:"process_cpu_us_per_record"`
	// The cluster's write-ahead log per committed record over the measured
	// window (pg_stat_wal; everything the cluster wrote, the relay's
	// completions included): bytes, WAL records, full-page images, and
	// WAL flushes (fsync) per 1,000 committed records.
	WALBytesPerRecord   float64 `json:"wal_bytes_per_record"`
	WALRecordsPerRecord float64 `json:"wal_records_per_record"`
	WALFPIPerRecord     float64 `json:"wal_fpi_per_record"`
	WALSyncsPer1000     float64 `json:"wal_syncs_per_1000"`
	// This process's heap allocation per committed record and its
	// garbage collections over the measured window (runtime.MemStats):
	// the producers' share is the same for every system.
	AllocBytesPerRecord float64 `json:"alloc_bytes_per_record"`
	GCs                 uint32  `json:"gcs"`
	// What the producers' COMMITs waited on, sampled (BENCH_WAIT_SAMPLE).
	CommitWaits string `json:"commit_waits,omitempty"`
}

// Spread is the median and range of one figure over rounds.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func spreadOf(runs []SystemRun, f func(SystemRun) float64) Spread {
	vs := make([]float64, len(runs))
	for i, r := range runs {
		vs[i] = f(r)
	}
	if len(vs) == 0 {
		return Spread{}
	}
	return Spread{Median: median(vs), Min: slices.Min(vs), Max: slices.Max(vs)}
}

// SystemSummary is one system's figures over the rounds of one rate.
type SystemSummary struct {
	System          string `json:"system"`
	Rounds          int    `json:"rounds"`
	P50MS           Spread `json:"p50_ms"`
	P99MS           Spread `json:"p99_ms"`
	MaxMS           Spread `json:"max_ms"`
	FromCommitP99MS Spread `json:"from_commit_p99_ms"`
	// From COMMIT's return (see SystemRun).
	AfterCommitP50MS Spread `json:"after_commit_p50_ms"`
	AfterCommitP99MS Spread `json:"after_commit_p99_ms"`
	AchievedRate     Spread `json:"achieved_rate"`
	CPUPerRecordUS   Spread `json:"cpu_us_per_record"`
	OwnCPUPerRecord  Spread `json:"own_cpu_us_per_record"`
	CommitP50MS      Spread `json:"commit_p50_ms"`
	CommitP99MS      Spread `json:"commit_p99_ms"`
	// Median COMMIT p99 over the plain table's median COMMIT p99 (issue 11
	// goal 3: within 1.10), when the plain table ran.
	CommitP99VsPlain float64 `json:"commit_p99_vs_plain,omitempty"`
	CommitP50VsPlain float64 `json:"commit_p50_vs_plain,omitempty"`
}

func summarize(systems []string, runs []SystemRun) []SystemSummary {
	var out []SystemSummary
	var plain *SystemSummary
	for _, sys := range systems {
		var rs []SystemRun
		for _, r := range runs {
			if r.System == sys {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		out = append(out, SystemSummary{
			System: sys, Rounds: len(rs),
			P50MS:            spreadOf(rs, func(r SystemRun) float64 { return r.P50MS }),
			P99MS:            spreadOf(rs, func(r SystemRun) float64 { return r.P99MS }),
			MaxMS:            spreadOf(rs, func(r SystemRun) float64 { return r.MaxMS }),
			FromCommitP99MS:  spreadOf(rs, func(r SystemRun) float64 { return r.FromCommitP99MS }),
			AfterCommitP50MS: spreadOf(rs, func(r SystemRun) float64 { return r.AfterCommitP50MS }),
			AfterCommitP99MS: spreadOf(rs, func(r SystemRun) float64 { return r.AfterCommitP99MS }),
			AchievedRate:     spreadOf(rs, func(r SystemRun) float64 { return r.AchievedRate }),
			CPUPerRecordUS:   spreadOf(rs, func(r SystemRun) float64 { return r.CPUPerRecordUS }),
			OwnCPUPerRecord:  spreadOf(rs, func(r SystemRun) float64 { return r.OwnCPUPerRecordUS }),
			CommitP50MS:      spreadOf(rs, func(r SystemRun) float64 { return r.CommitP50MS }),
			CommitP99MS:      spreadOf(rs, func(r SystemRun) float64 { return r.CommitP99MS }),
		})
	}
	for i := range out {
		if out[i].System == sysPlain {
			plain = &out[i]
		}
	}
	if plain != nil && plain.CommitP99MS.Median > 0 && plain.CommitP50MS.Median > 0 {
		for i := range out {
			if out[i].System != sysPlain {
				out[i].CommitP99VsPlain = out[i].CommitP99MS.Median / plain.CommitP99MS.Median
				out[i].CommitP50VsPlain = out[i].CommitP50MS.Median / plain.CommitP50MS.Median
			}
		}
	}
	return out
}

// runningSystem is a system started for one measurement.
type runningSystem struct {
	// write adds the system's record for message id to tx, after the
	// business INSERT.
	write func(ctx context.Context, tx pgx.Tx, id string, seq int, payload []byte) error
	stop  func() error
}

const steadyTopic = "bench.latency"

// startSystem starts sys publishing to pub.
func startSystem(ctx context.Context, o options, sys string, pub message.Publisher) (*runningSystem, error) {
	switch sys {
	case sysPostrelay:
		return startPostrelay(ctx, o, pub)
	case sysRetention:
		if o.retention <= 0 {
			o.retention = 24 * time.Hour
		}
		return startPostrelay(ctx, o, pub)
	case sysRiver:
		s, err := newRiverSetup(ctx, o, pub)
		if err != nil {
			return nil, err
		}
		if err := s.client.Start(ctx); err != nil {
			s.cleanup(ctx, o)
			return nil, fmt.Errorf("river: start: %w", err)
		}
		return &runningSystem{
			write: func(ctx context.Context, tx pgx.Tx, id string, _ int, payload []byte) error {
				_, err := s.client.InsertTx(ctx, tx, riverOutboxArgs{ID: id, Topic: steadyTopic, Payload: payload}, nil)
				return err
			},
			stop: func() error {
				err := s.stop(ctx)
				s.cleanup(ctx, o)
				return err
			},
		}, nil
	case sysForwarder:
		pool, err := openPool(ctx, o, 8)
		if err != nil {
			return nil, err
		}
		f, err := newForwarderSetup(ctx, pool)
		if err != nil {
			pool.Close()
			return nil, err
		}
		stopFw, err := f.run(ctx, pub)
		if err != nil {
			f.cleanup()
			pool.Close()
			return nil, err
		}
		return &runningSystem{
			write: func(_ context.Context, tx pgx.Tx, id string, _ int, payload []byte) error {
				return f.publishInTx(tx, steadyTopic, message.NewMessage(id, payload))
			},
			stop: func() error {
				stopFw()
				f.cleanup()
				pool.Close()
				return nil
			},
		}, nil
	case sysPlain:
		pool, err := openPool(ctx, o, 2)
		if err != nil {
			return nil, err
		}
		cfg, cleanup, err := benchSchema(ctx, pool, o)
		if err != nil {
			pool.Close()
			return nil, err
		}
		// The outbox's own table shape (columns, defaults, constraints,
		// indexes), without the relay's wake-up path.
		plain := pgx.Identifier{cfg.Schema, "plain_records"}.Sanitize()
		if _, err := pool.Exec(ctx, "CREATE TABLE "+plain+" (LIKE "+pgx.Identifier{cfg.Schema, "records"}.Sanitize()+" INCLUDING ALL)"); err != nil {
			cleanup()
			pool.Close()
			return nil, err
		}
		ins := "INSERT INTO " + plain + " (partition, key, topic, message_id, payload, metadata) VALUES ($1, $2, $3, $4, $5, '{}')"
		return &runningSystem{
			write: func(ctx context.Context, tx pgx.Tx, id string, seq int, payload []byte) error {
				_, err := tx.Exec(ctx, ins, seq%cfg.Partitions, steadyKey(seq), steadyTopic, id, payload)
				return err
			},
			stop: func() error {
				cleanup()
				pool.Close()
				return nil
			},
		}, nil
	}
	return nil, fmt.Errorf("unknown system %q", sys)
}

func steadyKey(seq int) string { return "k" + strconv.Itoa(seq%1000) }

// startPostrelay starts one relay in this process (default config) on a
// fresh schema and waits until it holds every partition.
func startPostrelay(ctx context.Context, o options, pub message.Publisher) (*runningSystem, error) {
	pool, err := openPool(ctx, o, 16)
	if err != nil {
		return nil, err
	}
	cfg, cleanup, err := benchSchema(ctx, pool, o)
	if err != nil {
		pool.Close()
		return nil, err
	}
	fail := func(err error) (*runningSystem, error) {
		cleanup()
		pool.Close()
		return nil, err
	}
	if v := os.Getenv("BENCH_TAIL_INTERVAL"); v != "" { // for tuning experiments
		if cfg.TailInterval, err = time.ParseDuration(v); err != nil {
			return fail(fmt.Errorf("BENCH_TAIL_INTERVAL: %w", err))
		}
	}
	relayPool := pool
	if o.relayURL != "" { // the relay through a pooler; writers stay on --database-url
		rc, err := pgxpool.ParseConfig(o.relayURL)
		if err != nil {
			return fail(fmt.Errorf("--relay-database-url: %w", err))
		}
		if o.pooler == engine.PoolerTransaction {
			rc.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
		}
		if relayPool, err = pgxpool.NewWithConfig(ctx, rc); err != nil {
			return fail(err)
		}
		inner := fail
		fail = func(err error) (*runningSystem, error) {
			relayPool.Close()
			return inner(err)
		}
	}
	cfg.Pooler, cfg.ListenURL = o.pooler, o.listenURL
	cfg.Retention = o.retention
	if o.pollInterval > 0 {
		cfg.PollInterval = o.pollInterval
	}
	if o.tailInterval > 0 {
		cfg.TailInterval = o.tailInterval
	}
	eng, err := engine.New(relayPool, pub, cfg)
	if err != nil {
		return fail(err)
	}
	events, _ := eng.Events() // every kind; closed when Run returns
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	deadline := time.After(60 * time.Second)
	for acquired := 0; acquired < cfg.Partitions; {
		select {
		case e := <-events:
			if e.Kind == engine.EventLeaseAcquired {
				acquired++
			}
		case err := <-done:
			stop()
			return fail(fmt.Errorf("postrelay relay exited before leasing its partitions: %w", err))
		case <-deadline:
			stop()
			<-done
			return fail(fmt.Errorf("postrelay relay leased fewer than %d partitions in 60s", cfg.Partitions))
		}
	}
	go func() {
		for range events { // keep draining; the hub drops when full anyway
		}
	}()
	wcfg := cfg
	wcfg.DisableNotify = os.Getenv("BENCH_NO_NOTIFY") != "" // diagnosis only: the relay then waits for its poll
	if v := os.Getenv("BENCH_NOTIFY_INTERVAL"); v != "" {
		wcfg.NotifyInterval, _ = time.ParseDuration(v)
	}
	w := engine.NewWriter(wcfg)
	return &runningSystem{
		write: func(ctx context.Context, tx pgx.Tx, id string, seq int, payload []byte) error {
			return w.Write(ctx, tx, engine.Record{Topic: steadyTopic, Key: steadyKey(seq), Payload: payload, MessageID: id})
		},
		stop: func() error {
			stop()
			err := <-done
			cleanup()
			if relayPool != pool {
				relayPool.Close()
			}
			pool.Close()
			return err
		},
	}, nil
}

// steadyOnce starts sys, produces at rate for o.warmup (not measured) and
// then o.duration (measured), waits for the measured records to be
// published, and stops sys.
func steadyOnce(ctx context.Context, producers *pgxpool.Pool, orders string, o options, sys string, rate, round int) (SystemRun, error) {
	run := SystemRun{System: sys, Round: round, TargetRate: rate}
	probe := newProbe()
	pub := newCountingPublisher(1<<62, 0)
	pub.onMsg = probe.onPublish
	rs, err := startSystem(ctx, o, sys, pub)
	if err != nil {
		return run, fmt.Errorf("%s: %w", sys, err)
	}
	var cpu0 time.Duration
	var own *ownCPU
	var wal0 walStats
	var walErr error
	var mem0, mem1 runtime.MemStats
	var sampler *waitSampler
	achieved, err := produce(ctx, producers, rate, o.warmup, o.duration, probe, orders, rs.write, func() {
		cpu0, own = machineCPU(), startOwnCPU(ctx, producers)
		wal0, walErr = readWAL(ctx, producers)
		runtime.ReadMemStats(&mem0)
		if like := os.Getenv("BENCH_WAIT_SAMPLE"); like != "" {
			if like == "1" {
				like = "commit"
			}
			sampler = startWaitSampler(ctx, producers, like)
		}
	})
	defer sampler.end() // on the error paths below; end is idempotent
	if err == nil {
		err = walErr
	}
	if err != nil {
		_ = rs.stop()
		return run, fmt.Errorf("%s: %w", sys, err)
	}
	if sys != sysPlain {
		if err := waitPublished(ctx, probe); err != nil {
			_ = rs.stop()
			return run, fmt.Errorf("%s: %w", sys, err)
		}
	}
	cpu := machineCPU() - cpu0
	ownUsed, selfUsed := own.since(ctx)
	runtime.ReadMemStats(&mem1)
	run.CommitWaits = sampler.end()
	wal1, err := readWAL(ctx, producers)
	if err != nil {
		_ = rs.stop()
		return run, fmt.Errorf("%s: %w", sys, err)
	}
	if err := rs.stop(); err != nil {
		return run, fmt.Errorf("%s: stop: %w", sys, err)
	}
	ls, lc := probe.latencies()
	cd := probe.commitDurations()
	run.AchievedRate, run.Samples = achieved, len(ls)
	run.P50MS, run.P90MS, run.P99MS, run.MaxMS = pct(ls, 0.5), pct(ls, 0.9), pct(ls, 0.99), pct(ls, 1)
	run.FromCommitP50MS, run.FromCommitP99MS, run.FromCommitMaxMS = pct(lc, 0.5), pct(lc, 0.99), pct(lc, 1)
	ac := probe.afterCommit()
	run.AfterCommitP50MS, run.AfterCommitP99MS = pct(ac, 0.5), pct(ac, 0.99)
	run.CommitP50MS, run.CommitP99MS, run.CommitMaxMS = pct(cd, 0.5), pct(cd, 0.99), pct(cd, 1)
	run.CPUPerRecordUS = cpuPerRecordUS(cpu, len(cd))
	run.OwnCPUPerRecordUS = cpuPerRecordUS(ownUsed, len(cd))
	run.ProcessCPUPerRecordUS = cpuPerRecordUS(selfUsed, len(cd))
	if n := float64(len(cd)); n > 0 {
		w := wal1.sub(wal0)
		run.WALBytesPerRecord, run.WALRecordsPerRecord = float64(w.bytes)/n, float64(w.records)/n
		run.WALFPIPerRecord, run.WALSyncsPer1000 = float64(w.fpi)/n, 1000*float64(w.syncs)/n
		run.AllocBytesPerRecord = float64(mem1.TotalAlloc-mem0.TotalAlloc) / n
	}
	run.GCs = mem1.NumGC - mem0.NumGC
	if f := os.Getenv("BENCH_LATENCY_DUMP"); f != "" && sys != sysPlain { // diagnosis: each system's last run's records
		if sys != sysPostrelay {
			f += "." + sys
		}
		if err := probe.dump(f); err != nil {
			return run, err
		}
	}
	return run, nil
}

// steadyRounds alternates systems round by round at one rate.
func steadyRounds(ctx context.Context, o options, systems []string, rate int, out io.Writer) ([]SystemRun, error) {
	producers, err := openPool(ctx, o, producerCount+4)
	if err != nil {
		return nil, err
	}
	defer producers.Close()
	orders, dropOrders, err := ordersTable(ctx, producers, o)
	if err != nil {
		return nil, err
	}
	defer dropOrders()
	var runs []SystemRun
	for round := 1; round <= o.rounds; round++ {
		for _, sys := range systems {
			r, err := steadyOnce(ctx, producers, orders, o, sys, rate, round)
			if err != nil {
				return nil, err
			}
			runs = append(runs, r)
			printRun(out, r)
		}
	}
	return runs, nil
}

// ordersTable creates the business table the producers insert into, in a
// schema of its own.
func ordersTable(ctx context.Context, pool *pgxpool.Pool, o options) (string, func(), error) {
	cfg, cleanup, err := benchSchema(ctx, pool, o)
	if err != nil {
		return "", nil, err
	}
	orders := pgx.Identifier{cfg.Schema, "orders"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+orders+" (id bigserial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		cleanup()
		return "", nil, err
	}
	return orders, cleanup, nil
}

func printRun(out io.Writer, r SystemRun) {
	if r.System == sysPlain {
		fmt.Fprintf(out, "  round %d %-20s rate %6.0f/s  (no relay)  COMMIT p50 %.2f / p99 %.2f / max %.2f ms  machine CPU %.0f µs/record, own %.0f (process %.0f)%s\n",
			r.Round, r.System, r.AchievedRate, r.CommitP50MS, r.CommitP99MS, r.CommitMaxMS, r.CPUPerRecordUS, r.OwnCPUPerRecordUS, r.ProcessCPUPerRecordUS, walText(r))
		return
	}
	fmt.Fprintf(out, "  round %d %-20s rate %6.0f/s  p50 %6.2f  p90 %6.2f  p99 %6.2f  max %7.2f ms  from COMMIT p99 %6.2f ms  after COMMIT p50 %.2f / p99 %.2f ms  COMMIT p50 %.2f / p99 %.2f ms  machine CPU %.0f µs/record, own %.0f (process %.0f)  (%d samples)%s\n",
		r.Round, r.System, r.AchievedRate, r.P50MS, r.P90MS, r.P99MS, r.MaxMS, r.FromCommitP99MS, r.AfterCommitP50MS, r.AfterCommitP99MS, r.CommitP50MS, r.CommitP99MS, r.CPUPerRecordUS, r.OwnCPUPerRecordUS, r.ProcessCPUPerRecordUS, r.Samples, walText(r))
}

// walText is a run's WAL and heap per committed record (and its sampled
// COMMIT waits, if any), for its line.
func walText(r SystemRun) string {
	s := fmt.Sprintf("  WAL %.0f B / %.1f records / %.3f FPI per record, %.0f flushes per 1,000  heap %.0f B per record, %d GCs",
		r.WALBytesPerRecord, r.WALRecordsPerRecord, r.WALFPIPerRecord, r.WALSyncsPer1000, r.AllocBytesPerRecord, r.GCs)
	if r.CommitWaits != "" {
		s += "  " + r.CommitWaits
	}
	return s
}

func printSummaries(out io.Writer, rate int, ss []SystemSummary) {
	sp := func(s Spread, f string) string {
		return fmt.Sprintf(f+" ("+f+"–"+f+")", s.Median, s.Min, s.Max)
	}
	fmt.Fprintf(out, "at %d/s offered, medians over rounds (min–max); latency from just before the business INSERT:\n", rate)
	for _, s := range ss {
		if s.System == sysPlain {
			fmt.Fprintf(out, "  %-20s rate %s/s  COMMIT p50 %s  p99 %s ms  CPU %s µs/record, own %s\n", s.System,
				sp(s.AchievedRate, "%.0f"), sp(s.CommitP50MS, "%.2f"), sp(s.CommitP99MS, "%.2f"), sp(s.CPUPerRecordUS, "%.0f"), sp(s.OwnCPUPerRecord, "%.0f"))
			continue
		}
		vs := ""
		if s.CommitP99VsPlain > 0 {
			vs = fmt.Sprintf(" (%.2f× / %.2f× the plain table's)", s.CommitP50VsPlain, s.CommitP99VsPlain)
		}
		fmt.Fprintf(out, "  %-20s rate %s/s  p50 %s  p99 %s  max %s ms  after COMMIT p50 %s / p99 %s ms  CPU %s µs/record, own %s  COMMIT p50 %s / p99 %s ms%s\n", s.System,
			sp(s.AchievedRate, "%.0f"), sp(s.P50MS, "%.2f"), sp(s.P99MS, "%.2f"), sp(s.MaxMS, "%.1f"), sp(s.AfterCommitP50MS, "%.2f"), sp(s.AfterCommitP99MS, "%.2f"), sp(s.CPUPerRecordUS, "%.0f"), sp(s.OwnCPUPerRecord, "%.0f"),
			sp(s.CommitP50MS, "%.2f"), sp(s.CommitP99MS, "%.2f"), vs)
	}
}
