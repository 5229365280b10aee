package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/engine"
)

// LatencyResult is the latency scenario's JSON.
type LatencyResult struct {
	Scenario     string  `json:"scenario"`
	TargetRate   int     `json:"target_rate"`
	DurationSec  float64 `json:"duration_sec"`
	AchievedRate float64 `json:"achieved_rate"`
	Samples      int     `json:"samples"`
	P50MS        float64 `json:"p50_ms"`
	P90MS        float64 `json:"p90_ms"`
	P99MS        float64 `json:"p99_ms"`
	MaxMS        float64 `json:"max_ms"`
	// The COMMIT statement's own duration (part of every latency above).
	CommitP50MS float64 `json:"commit_p50_ms"`
	CommitP99MS float64 `json:"commit_p99_ms"`
	// Machine CPU (producers, relay, PostgreSQL) per committed record.
	CPUPerRecordUS float64 `json:"cpu_us_per_record"`

	Baseline             string  `json:"baseline,omitempty"`
	BaselineAchievedRate float64 `json:"baseline_achieved_rate,omitempty"`
	BaselineP50MS        float64 `json:"baseline_p50_ms,omitempty"`
	BaselineP90MS        float64 `json:"baseline_p90_ms,omitempty"`
	BaselineP99MS        float64 `json:"baseline_p99_ms,omitempty"`
	BaselineMaxMS        float64 `json:"baseline_max_ms,omitempty"`
	P99Ratio             float64 `json:"p99_ratio,omitempty"`
}

// latencyProbe pairs each record's commit start with its publish time.
type latencyProbe struct {
	commits   sync.Map // message id → time.Time (just before COMMIT)
	cmu       sync.Mutex
	commitDur []time.Duration // each COMMIT's own duration
	mu        sync.Mutex
	published map[string]time.Time
}

func newProbe() *latencyProbe { return &latencyProbe{published: map[string]time.Time{}} }

func (p *latencyProbe) onPublish(m *message.Message) {
	now := time.Now()
	p.mu.Lock()
	if _, ok := p.published[m.UUID]; !ok {
		p.published[m.UUID] = now
	}
	p.mu.Unlock()
}

func (p *latencyProbe) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.published)
}

// commitDurations returns the COMMITs' own durations, sorted: the part of
// the commit-to-publish latency the relay cannot shorten.
func (p *latencyProbe) commitDurations() []time.Duration {
	p.cmu.Lock()
	defer p.cmu.Unlock()
	ds := slices.Clone(p.commitDur)
	slices.Sort(ds)
	return ds
}

// latencies returns commit-to-publish latencies, sorted.
func (p *latencyProbe) latencies() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ls []time.Duration
	p.commits.Range(func(k, v any) bool {
		if pub, ok := p.published[k.(string)]; ok {
			ls = append(ls, max(pub.Sub(v.(time.Time)), 0))
		}
		return true
	})
	slices.Sort(ls)
	return ls
}

// dump writes one line per record: milliseconds since the first commit and
// the commit-to-publish latency in milliseconds, in commit order.
func (p *latencyProbe) dump(file string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	type sample struct{ at, lat time.Duration }
	var ss []sample
	var first time.Time
	p.commits.Range(func(k, v any) bool {
		at := v.(time.Time)
		if pub, ok := p.published[k.(string)]; ok {
			if first.IsZero() || at.Before(first) {
				first = at
			}
			ss = append(ss, sample{at: time.Duration(at.UnixNano()), lat: pub.Sub(at)})
		}
		return true
	})
	slices.SortFunc(ss, func(a, b sample) int { return int(a.at - b.at) })
	var b []byte
	for _, s := range ss {
		b = fmt.Appendf(b, "%.3f %.3f\n", float64(s.at-time.Duration(first.UnixNano()))/1e6, float64(s.lat)/1e6)
	}
	return os.WriteFile(file, b, 0o644)
}

func pct(ls []time.Duration, q float64) float64 {
	if len(ls) == 0 {
		return 0
	}
	i := min(int(q*float64(len(ls))), len(ls)-1)
	return float64(ls[i]) / float64(time.Millisecond)
}

// produce commits single-record transactions at rate for d through write,
// returning the achieved rate.
func produce(ctx context.Context, pool *pgxpool.Pool, rate int, d time.Duration, probe *latencyProbe,
	write func(ctx context.Context, tx pgx.Tx, id string, seq int) error) (float64, error) {
	jobs := make(chan int, rate)
	var committed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for seq := range jobs {
				id := watermill.NewUUID()
				tx, err := pool.Begin(ctx)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				if err := write(ctx, tx, id, seq); err != nil {
					_ = tx.Rollback(ctx)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				before := time.Now()
				probe.commits.Store(id, before)
				if err := tx.Commit(ctx); err != nil {
					probe.commits.Delete(id)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				probe.cmu.Lock()
				probe.commitDur = append(probe.commitDur, time.Since(before))
				probe.cmu.Unlock()
				committed.Add(1)
			}
		})
	}
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	issued := 0
	for time.Since(start) < d && ctx.Err() == nil {
		<-tick.C
		due := int(time.Since(start).Seconds() * float64(rate))
		for ; issued < due; issued++ {
			select {
			case jobs <- issued:
			default: // producers saturated: the achieved rate shows it
			}
		}
	}
	tick.Stop()
	close(jobs)
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(committed.Load()) / time.Since(start).Seconds(), nil
}

func waitPublished(ctx context.Context, probe *latencyProbe) {
	want := 0
	probe.commits.Range(func(any, any) bool { want++; return true })
	deadline := time.Now().Add(15 * time.Second)
	for probe.count() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond) // polling the probe, with a deadline
	}
}

func runLatency(ctx context.Context, o options, out io.Writer) (*LatencyResult, error) {
	if o.duration <= 0 {
		o.duration = 10 * time.Second
	}
	if o.rate < 1 {
		return nil, fmt.Errorf("--rate %d: must be positive", o.rate)
	}
	pool, err := openPool(ctx, o, 24)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	res := &LatencyResult{Scenario: "latency", TargetRate: o.rate, DurationSec: o.duration.Seconds()}

	// postrelay: one relay in process, default config.
	cfg, cleanup, err := benchSchema(ctx, pool, o)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	probe := newProbe()
	pub := newCountingPublisher(1<<62, 0)
	pub.onMsg = probe.onPublish
	if v := os.Getenv("BENCH_TAIL_INTERVAL"); v != "" { // for tuning experiments
		if cfg.TailInterval, err = time.ParseDuration(v); err != nil {
			return nil, fmt.Errorf("BENCH_TAIL_INTERVAL: %w", err)
		}
	}
	relayPool := pool
	if o.relayURL != "" { // the relay through a pooler; writers stay on --database-url
		rc, err := pgxpool.ParseConfig(o.relayURL)
		if err != nil {
			return nil, fmt.Errorf("--relay-database-url: %w", err)
		}
		if o.pooler == engine.PoolerTransaction {
			rc.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
		}
		if relayPool, err = pgxpool.NewWithConfig(ctx, rc); err != nil {
			return nil, err
		}
		defer relayPool.Close()
	}
	cfg.Pooler, cfg.ListenURL, cfg.PollInterval = o.pooler, o.listenURL, o.pollInterval
	eng, err := engine.New(relayPool, pub, cfg)
	if err != nil {
		return nil, err
	}
	events := eng.Events()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	acquired := 0
	for acquired < cfg.Partitions {
		if e := <-events; e.Kind == engine.EventLeaseAcquired {
			acquired++
		}
	}
	go func() {
		for range events { // keep draining; the hub drops when full anyway
		}
	}()
	w := engine.NewWriter(cfg)
	payload := []byte(`{"order_id":1,"amount_cents":4200}`)
	cpu0 := machineCPU()
	rate, err := produce(ctx, pool, o.rate, o.duration, probe, func(ctx context.Context, tx pgx.Tx, id string, seq int) error {
		return w.Write(ctx, tx, engine.Record{Topic: "bench.latency", Key: "k" + strconv.Itoa(seq%1000), Payload: payload, MessageID: id})
	})
	if err != nil {
		stop()
		<-done
		return nil, err
	}
	waitPublished(ctx, probe)
	cpu := machineCPU() - cpu0
	stop()
	if err := <-done; err != nil {
		return nil, err
	}
	ls := probe.latencies()
	res.CPUPerRecordUS = cpuPerRecordUS(cpu, len(ls))
	if f := os.Getenv("BENCH_LATENCY_DUMP"); f != "" { // for diagnosis: commit offset and latency per record
		if err := probe.dump(f); err != nil {
			return nil, err
		}
	}
	res.AchievedRate, res.Samples = rate, len(ls)
	res.P50MS, res.P90MS, res.P99MS, res.MaxMS = pct(ls, 0.5), pct(ls, 0.9), pct(ls, 0.99), pct(ls, 1)
	cd := probe.commitDurations()
	res.CommitP50MS, res.CommitP99MS = pct(cd, 0.5), pct(cd, 0.99)
	fmt.Fprintf(out, "%-22s rate %6.0f/s  p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  max %7.2f ms  (%d samples; COMMIT itself p50 %.2f / p99 %.2f ms; machine CPU %.0f µs/record)\n",
		"postrelay", rate, res.P50MS, res.P90MS, res.P99MS, res.MaxMS, len(ls), res.CommitP50MS, res.CommitP99MS, res.CPUPerRecordUS)

	if o.baseline == "watermill-forwarder" {
		f, err := newForwarderSetup(ctx, pool)
		if err != nil {
			return nil, err
		}
		defer f.cleanup()
		probe := newProbe()
		cp := newCountingPublisher(1<<62, 0)
		cp.onMsg = probe.onPublish
		stopFw, err := f.run(ctx, cp)
		if err != nil {
			return nil, err
		}
		rate, err := produce(ctx, pool, o.rate, o.duration, probe, func(ctx context.Context, tx pgx.Tx, id string, seq int) error {
			return f.publishInTx(tx, "bench.latency", message.NewMessage(id, payload))
		})
		if err != nil {
			stopFw()
			return nil, err
		}
		waitPublished(ctx, probe)
		stopFw()
		ls := probe.latencies()
		res.Baseline = o.baseline
		res.BaselineAchievedRate = rate
		res.BaselineP50MS, res.BaselineP90MS, res.BaselineP99MS, res.BaselineMaxMS = pct(ls, 0.5), pct(ls, 0.9), pct(ls, 0.99), pct(ls, 1)
		if res.P99MS > 0 {
			res.P99Ratio = res.BaselineP99MS / res.P99MS
		}
		fmt.Fprintf(out, "%-22s rate %6.0f/s  p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  max %7.2f ms  (%d samples)\n",
			"watermill forwarder", rate, res.BaselineP50MS, res.BaselineP90MS, res.BaselineP99MS, res.BaselineMaxMS, len(ls))
	}
	return res, nil
}
