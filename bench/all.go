package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// AllResult gathers every scenario of one run.
type AllResult struct {
	Date          string         `json:"date"`
	Machine       string         `json:"machine"`
	Drain         *DrainResult   `json:"drain"`
	DrainDelay    *DrainResult   `json:"drain_publish_delay_1ms"`
	DrainTracing  *DrainResult   `json:"drain_tracing_on"`
	DrainMillion  *DrainResult   `json:"drain_1m"`
	Latency1000   *LatencyResult `json:"latency_1000"`
	Latency3000   *LatencyResult `json:"latency_3000,omitempty"`
	Latency5000   *LatencyResult `json:"latency_5000"`
	Scale         *ScaleResult   `json:"scale"`
	Write         *WriteResult   `json:"write"`
	TracingCostPc float64        `json:"tracing_cost_pct"`
	// The tracing cost comes from alternated off/on drains of one run:
	// their rates, and the cost from their medians.
	TracingOffRecPerSec []float64 `json:"tracing_off_records_per_sec"`
	TracingOnRecPerSec  []float64 `json:"tracing_on_records_per_sec"`
	// The run's baselines and River's configuration, and the catalogs
	// before the run.
	Baselines []string       `json:"baselines,omitempty"`
	River     *riverConfig   `json:"river_config,omitempty"`
	Catalogs  *CatalogReport `json:"catalogs,omitempty"`
}

// tracingPairs is how many alternated drains without and with tracing the
// tracing cost is the median of.
const tracingPairs = 3

// runAll runs every scenario with the documented settings and rewrites the
// results section of bench/README.md.
func runAll(ctx context.Context, o options, out io.Writer) (*AllResult, error) {
	res := &AllResult{Date: time.Now().UTC().Format("2006-01-02"), Machine: machine(), Catalogs: o.catalogs}
	step := func(name string) { fmt.Fprintf(out, "\n== %s ==\n", name) }
	if o.baseline == "" {
		o.baseline = sysRiver + "," + sysForwarder
	}
	baselines, err := parseBaselines(o.baseline)
	if err != nil {
		return nil, err
	}
	res.Baselines = baselines
	if slices.Contains(baselines, sysRiver) {
		rc := o.river
		res.River = &rc
	}
	if o.rounds == 0 {
		o.rounds = 3
	}
	d := o
	step("drain, memory broker, 1 relay, with the baselines " + o.baseline)
	if res.Drain, err = runDrain(ctx, d, out); err != nil {
		return nil, err
	}
	for i := range tracingPairs {
		for _, tr := range []string{"off", "on"} {
			step(fmt.Sprintf("drain, tracing %s (pair %d of %d)", tr, i+1, tracingPairs))
			d = o
			d.tracing, d.baseline, d.rounds = tr, "", 1
			r, err := runDrain(ctx, d, out)
			if err != nil {
				return nil, err
			}
			if tr == "off" {
				res.TracingOffRecPerSec = append(res.TracingOffRecPerSec, r.RecordsPerSec)
				continue
			}
			res.TracingOnRecPerSec = append(res.TracingOnRecPerSec, r.RecordsPerSec)
			if res.DrainTracing == nil || r.RecordsPerSec < res.DrainTracing.RecordsPerSec {
				res.DrainTracing = r
			}
		}
	}
	offMed, onMed := median(res.TracingOffRecPerSec), median(res.TracingOnRecPerSec)
	res.TracingCostPc = (1 - onMed/offMed) * 100
	fmt.Fprintf(out, "tracing cost by medians: off %.0f, on %.0f rec/s: %.1f %%\n", offMed, onMed, res.TracingCostPc)
	step("drain, 1 ms publish delay, with the baselines (20,000 records for each baseline)")
	d = o
	d.publishDelay, d.baseline, d.rounds = time.Millisecond, "", 1
	if res.DrainDelay, err = runDrain(ctx, d, out); err != nil {
		return nil, err
	}
	pool, err := openPool(ctx, o, 8)
	if err != nil {
		return nil, err
	}
	for _, sys := range baselines {
		b, err := baselineDrain(ctx, pool, d, sys, 20000, res.DrainDelay.RecordsPerSec, out)
		if err != nil {
			pool.Close()
			return nil, err
		}
		res.DrainDelay.addBaseline(b)
	}
	pool.Close()
	step("drain, 1,000,000 records (peak RSS)")
	d = o
	d.records, d.baseline, d.rounds = 1000000, "", 1
	if res.DrainMillion, err = runDrain(ctx, d, out); err != nil {
		return nil, err
	}
	for _, at := range []struct {
		rate int
		res  **LatencyResult
	}{{1000, &res.Latency1000}, {3000, &res.Latency3000}, {5000, &res.Latency5000}} {
		step(fmt.Sprintf("steady load at %d records/s offered, %d rounds alternating postrelay, %s, the plain table", at.rate, o.rounds, o.baseline))
		if *at.res, err = latencyAt(ctx, o, at.rate, out); err != nil {
			return nil, err
		}
	}
	step(fmt.Sprintf("scale: 1, 2, 4, 8 relays, 20,000 records each, 5 ms publish delay, 8 in flight per relay, %d rounds", o.rounds))
	s := o
	s.out = "bench/scale.svg"
	if res.Scale, err = runScale(ctx, s, out); err != nil {
		return nil, err
	}
	step("write, and the COMMIT cost at " + o.commitRates + " tx/s")
	if res.Write, err = runWrite(ctx, o, out); err != nil {
		return nil, err
	}
	if err := writeReport(res); err != nil {
		return nil, err
	}
	fmt.Fprintln(out, "\nbench/README.md and bench/results.json updated")
	return res, nil
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s, PostgreSQL on loopback", runtime.NumCPU(), cpu, runtime.Version())
}

// median returns the median of vs (the mean of the middle two for an even
// count), 0 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
