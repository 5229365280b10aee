package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// LatencyResult is the latency scenario's JSON at one rate. The top-level
// figures are postrelay's (medians over the rounds, latency from just before
// the business INSERT); Systems has every system's medians and spreads, Runs
// each measurement.
type LatencyResult struct {
	Scenario     string  `json:"scenario"`
	TargetRate   int     `json:"target_rate"`
	DurationSec  float64 `json:"duration_sec"`
	WarmupSec    float64 `json:"warmup_sec"`
	Rounds       int     `json:"rounds"`
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

	// The forwarder's figures, when it ran (medians over the rounds).
	Baseline             string  `json:"baseline,omitempty"`
	BaselineAchievedRate float64 `json:"baseline_achieved_rate,omitempty"`
	BaselineP50MS        float64 `json:"baseline_p50_ms,omitempty"`
	BaselineP90MS        float64 `json:"baseline_p90_ms,omitempty"`
	BaselineP99MS        float64 `json:"baseline_p99_ms,omitempty"`
	BaselineMaxMS        float64 `json:"baseline_max_ms,omitempty"`
	P99Ratio             float64 `json:"p99_ratio,omitempty"`

	River    *riverConfig    `json:"river_config,omitempty"`
	Catalogs *CatalogReport  `json:"catalogs,omitempty"`
	Systems  []SystemSummary `json:"systems,omitempty"`
	Runs     []SystemRun     `json:"runs,omitempty"`
}

// LatencySeries is the latency scenario's JSON for several rates.
type LatencySeries struct {
	Scenario string           `json:"scenario"`
	Rates    []*LatencyResult `json:"rates"`
}

// latencyProbe pairs each record's start and commit times with its publish
// time.
type latencyProbe struct {
	starts    sync.Map // message id → time.Time (just before the business INSERT)
	commits   sync.Map // message id → time.Time (just before COMMIT)
	ends      sync.Map // message id → time.Time (COMMIT returned)
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

// missing counts the committed records not yet published.
func (p *latencyProbe) missing() (missing, committed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.commits.Range(func(k, _ any) bool {
		committed++
		if _, ok := p.published[k.(string)]; !ok {
			missing++
		}
		return true
	})
	return missing, committed
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

// latencies returns the latencies from just before the business INSERT and
// from just before COMMIT to the publish, each sorted.
func (p *latencyProbe) latencies() (fromStart, fromCommit []time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.commits.Range(func(k, v any) bool {
		pub, ok := p.published[k.(string)]
		if !ok {
			return true
		}
		fromCommit = append(fromCommit, max(pub.Sub(v.(time.Time)), 0))
		if s, ok := p.starts.Load(k); ok {
			fromStart = append(fromStart, max(pub.Sub(s.(time.Time)), 0))
		}
		return true
	})
	slices.Sort(fromStart)
	slices.Sort(fromCommit)
	return fromStart, fromCommit
}

// afterCommit returns the latencies from COMMIT's return to the publish,
// sorted: what the relay adds once the producer's commit is durable (the
// record is visible to other sessions a little before COMMIT returns, so
// some are 0).
func (p *latencyProbe) afterCommit() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Duration
	p.ends.Range(func(k, v any) bool {
		if pub, ok := p.published[k.(string)]; ok {
			out = append(out, max(pub.Sub(v.(time.Time)), 0))
		}
		return true
	})
	slices.Sort(out)
	return out
}

// dump writes a line "# <Unix µs of the first record's start>", a line
// "# gc <Unix µs> <µs>" per garbage collection pause the runtime remembers,
// and then one line per record: milliseconds since the first record's start
// (just before its business INSERT), its latency from there, from just
// before its COMMIT and from COMMIT's return, in milliseconds, in start
// order.
func (p *latencyProbe) dump(file string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	type sample struct{ at, lat, fromCommit, afterCommit time.Duration }
	var ss []sample
	var first time.Time
	p.starts.Range(func(k, v any) bool {
		at := v.(time.Time)
		if pub, ok := p.published[k.(string)]; ok {
			if first.IsZero() || at.Before(first) {
				first = at
			}
			var fc, ac time.Duration
			if c, ok := p.commits.Load(k); ok {
				fc = pub.Sub(c.(time.Time))
			}
			if e, ok := p.ends.Load(k); ok {
				ac = pub.Sub(e.(time.Time))
			}
			ss = append(ss, sample{at: time.Duration(at.UnixNano()), lat: pub.Sub(at), fromCommit: fc, afterCommit: ac})
		}
		return true
	})
	slices.SortFunc(ss, func(a, b sample) int { return int(a.at - b.at) })
	b := fmt.Appendf(nil, "# %d\n", first.UnixMicro())
	// The process's last garbage collections (up to 256): when each pause
	// ended (Unix µs) and how long it lasted (µs), to lay beside the slow
	// records.
	var gc debug.GCStats
	debug.ReadGCStats(&gc)
	for i := range gc.PauseEnd {
		b = fmt.Appendf(b, "# gc %d %d\n", gc.PauseEnd[i].UnixMicro(), gc.Pause[i].Microseconds())
	}
	for _, s := range ss {
		b = fmt.Appendf(b, "%.3f %.3f %.3f %.3f\n", float64(s.at-time.Duration(first.UnixNano()))/1e6, float64(s.lat)/1e6, float64(s.fromCommit)/1e6, float64(s.afterCommit)/1e6)
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

// producerCount is how many producer connections commit concurrently.
const producerCount = 16

// produce commits producer transactions at rate: BEGIN, one business INSERT
// into orders, write (the system's record), COMMIT. It runs for warmup
// (records not measured), calls onMeasure, and runs for d (measured: their
// times go to probe). It returns the measured window's committed rate.
func produce(ctx context.Context, pool *pgxpool.Pool, rate int, warmup, d time.Duration, probe *latencyProbe, orders string,
	write func(ctx context.Context, tx pgx.Tx, id string, seq int, payload []byte) error, onMeasure func()) (float64, error) {
	type job struct {
		seq      int
		measured bool
	}
	jobs := make(chan job, rate)
	var committed atomic.Int64
	var firstErr atomic.Value
	payload := []byte(`{"order_id":1,"amount_cents":4200}`)
	insert := "INSERT INTO " + orders + " (customer, amount) VALUES ($1, $2)"
	var wg sync.WaitGroup
	for range producerCount {
		wg.Go(func() {
			for j := range jobs {
				id := watermill.NewUUID()
				tx, err := pool.Begin(ctx)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				start := time.Now()
				if _, err := tx.Exec(ctx, insert, steadyKey(j.seq), 4200); err != nil {
					_ = tx.Rollback(ctx)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				if err := write(ctx, tx, id, j.seq, payload); err != nil {
					_ = tx.Rollback(ctx)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				before := time.Now()
				if j.measured {
					probe.starts.Store(id, start)
					probe.commits.Store(id, before)
				}
				if err := tx.Commit(ctx); err != nil {
					probe.starts.Delete(id)
					probe.commits.Delete(id)
					probe.ends.Delete(id)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				if j.measured {
					probe.ends.Store(id, time.Now())
					probe.cmu.Lock()
					probe.commitDur = append(probe.commitDur, time.Since(before))
					probe.cmu.Unlock()
					committed.Add(1)
				}
			}
		})
	}
	tick := time.NewTicker(time.Millisecond)
	issue := func(from time.Time, span time.Duration, measured bool, seq0 int) int {
		issued := 0
		for time.Since(from) < span && ctx.Err() == nil {
			<-tick.C
			due := int(time.Since(from).Seconds() * float64(rate))
			for ; issued < due; issued++ {
				select {
				case jobs <- job{seq: seq0 + issued, measured: measured}:
				default: // producers saturated: the achieved rate shows it
				}
			}
		}
		return seq0 + issued
	}
	seq := issue(time.Now(), warmup, false, 0)
	if onMeasure != nil {
		onMeasure()
	}
	start := time.Now()
	issue(start, d, true, seq)
	tick.Stop()
	close(jobs)
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(committed.Load()) / time.Since(start).Seconds(), nil
}

// waitPublished waits until every measured committed record has been
// published, for at most a minute.
func waitPublished(ctx context.Context, probe *latencyProbe) error {
	deadline := time.Now().Add(time.Minute)
	for {
		missing, committed := probe.missing()
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d committed records not published within a minute", missing, committed)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling the probe, with a deadline
		}
	}
}

// runLatency runs the steady load at each --rate: the systems alternate
// round by round (postrelay, the baselines in --baseline order, and the
// plain-table COMMIT reference).
func runLatency(ctx context.Context, o options, out io.Writer) (any, error) {
	rates, err := parseRates(o.rates)
	if err != nil {
		return nil, err
	}
	var series LatencySeries
	series.Scenario = "latency"
	for _, rate := range rates {
		r, err := latencyAt(ctx, o, rate, out)
		if err != nil {
			return nil, err
		}
		series.Rates = append(series.Rates, r)
	}
	if len(series.Rates) == 1 {
		return series.Rates[0], nil
	}
	return &series, nil
}

// latencyAt runs the steady load at one rate.
func latencyAt(ctx context.Context, o options, rate int, out io.Writer) (*LatencyResult, error) {
	o = o.steadyDefaults(10*time.Second, 1)
	baselines, err := parseBaselines(o.baseline)
	if err != nil {
		return nil, err
	}
	systems := append([]string{sysPostrelay}, baselines...)
	if o.commitReference {
		systems = append(systems, sysPlain)
	}
	res := &LatencyResult{Scenario: "latency", TargetRate: rate, DurationSec: o.duration.Seconds(), WarmupSec: o.warmup.Seconds(), Rounds: o.rounds}
	if slices.Contains(baselines, sysRiver) {
		rc := o.river
		res.River = &rc
	}
	res.Catalogs = o.catalogs
	fmt.Fprintf(out, "steady load at %d/s: %s, %d round(s) of %s (+ %s warm-up) each\n", rate, strings.Join(systems, ", "), o.rounds, o.duration, o.warmup)
	runs, err := steadyRounds(ctx, o, systems, rate, out)
	if err != nil {
		return nil, err
	}
	res.Runs = runs
	res.Systems = summarize(systems, runs)
	printSummaries(out, rate, res.Systems)
	for _, s := range res.Systems {
		switch s.System {
		case sysPostrelay:
			res.AchievedRate, res.CPUPerRecordUS = s.AchievedRate.Median, s.CPUPerRecordUS.Median
			res.P50MS, res.P99MS, res.MaxMS = s.P50MS.Median, s.P99MS.Median, s.MaxMS.Median
			res.CommitP50MS, res.CommitP99MS = s.CommitP50MS.Median, s.CommitP99MS.Median
			var p90, samples []float64
			for _, r := range runs {
				if r.System == sysPostrelay {
					p90 = append(p90, r.P90MS)
					samples = append(samples, float64(r.Samples))
				}
			}
			res.P90MS, res.Samples = median(p90), int(median(samples))
		case sysForwarder:
			res.Baseline = sysForwarder
			res.BaselineAchievedRate = s.AchievedRate.Median
			res.BaselineP50MS, res.BaselineP99MS, res.BaselineMaxMS = s.P50MS.Median, s.P99MS.Median, s.MaxMS.Median
			var p90 []float64
			for _, r := range runs {
				if r.System == sysForwarder {
					p90 = append(p90, r.P90MS)
				}
			}
			res.BaselineP90MS = median(p90)
		}
	}
	if res.Baseline != "" && res.P99MS > 0 {
		res.P99Ratio = res.BaselineP99MS / res.P99MS
	}
	return res, nil
}
