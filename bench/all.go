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
	Latency5000   *LatencyResult `json:"latency_5000"`
	Scale         *ScaleResult   `json:"scale"`
	Write         *WriteResult   `json:"write"`
	TracingCostPc float64        `json:"tracing_cost_pct"`
	// The tracing cost comes from alternated off/on drains of one run:
	// their rates, and the cost from their medians.
	TracingOffRecPerSec []float64 `json:"tracing_off_records_per_sec"`
	TracingOnRecPerSec  []float64 `json:"tracing_on_records_per_sec"`
}

// tracingPairs is how many alternated drains without and with tracing the
// tracing cost is the median of.
const tracingPairs = 3

// runAll runs every scenario with the documented settings and rewrites the
// results section of bench/README.md.
func runAll(ctx context.Context, o options, out io.Writer) (*AllResult, error) {
	res := &AllResult{Date: time.Now().UTC().Format("2006-01-02"), Machine: machine()}
	step := func(name string) { fmt.Fprintf(out, "\n== %s ==\n", name) }
	var err error
	d := o
	d.baseline = "watermill-forwarder"
	step("drain, memory broker, 1 relay, with the forwarder baseline")
	if res.Drain, err = runDrain(ctx, d, out); err != nil {
		return nil, err
	}
	for i := range tracingPairs {
		for _, tr := range []string{"off", "on"} {
			step(fmt.Sprintf("drain, tracing %s (pair %d of %d)", tr, i+1, tracingPairs))
			d = o
			d.tracing = tr
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
	step("drain, 1 ms publish delay, with the forwarder baseline (20,000 records for the forwarder)")
	d = o
	d.publishDelay = time.Millisecond
	if res.DrainDelay, err = runDrain(ctx, d, out); err != nil {
		return nil, err
	}
	fd := d
	fd.records = 20000
	pool, err := openPool(ctx, o, 8)
	if err != nil {
		return nil, err
	}
	secs, err := forwarderDrain(ctx, pool, fd, out)
	pool.Close()
	if err != nil {
		return nil, err
	}
	res.DrainDelay.Baseline = "watermill-forwarder"
	res.DrainDelay.BaselineSeconds = secs
	res.DrainDelay.BaselineRecPerSec = float64(fd.records) / secs
	res.DrainDelay.Ratio = res.DrainDelay.RecordsPerSec / res.DrainDelay.BaselineRecPerSec
	fmt.Fprintf(out, "forwarder with 1 ms delay: %.0f rec/s; ratio %.1fx\n", res.DrainDelay.BaselineRecPerSec, res.DrainDelay.Ratio)
	step("drain, 1,000,000 records (peak RSS)")
	d = o
	d.records = 1000000
	if res.DrainMillion, err = runDrain(ctx, d, out); err != nil {
		return nil, err
	}
	step("latency at 1,000 records/s")
	l := o
	l.rate, l.baseline = 1000, "watermill-forwarder"
	if res.Latency1000, err = runLatency(ctx, l, out); err != nil {
		return nil, err
	}
	step("latency at 5,000 records/s")
	l.rate = 5000
	if res.Latency5000, err = runLatency(ctx, l, out); err != nil {
		return nil, err
	}
	step("scale: 1, 2, 4, 8 relays, 5 ms publish delay, 8 in flight per relay")
	s := o
	s.out = "bench/scale.svg"
	if res.Scale, err = runScale(ctx, s, out); err != nil {
		return nil, err
	}
	step("write")
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
