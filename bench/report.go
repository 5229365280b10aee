package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

const (
	readmePath  = "bench/README.md"
	resultsPath = "bench/results.json"
	startMark   = "<!-- results:start -->"
	endMark     = "<!-- results:end -->"
)

// runReport rewrites the README's results from results.json, without
// running anything.
func runReport() (*AllResult, error) {
	b, err := os.ReadFile(resultsPath)
	if err != nil {
		return nil, err
	}
	var r AllResult
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, writeReport(&r)
}

// writeReport stores the JSON and rewrites the results section of the
// benchmark README.
func writeReport(r *AllResult) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(resultsPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	s := string(readme)
	i, j := strings.Index(s, startMark), strings.Index(s, endMark)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s … %s section", readmePath, startMark, endMark)
	}
	s = s[:i+len(startMark)] + "\n" + resultsMarkdown(r) + s[j:]
	return os.WriteFile(readmePath, []byte(s), 0o644)
}

func resultsMarkdown(r *AllResult) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("Run on %s — %s. Command: `go run ./bench all`.\n\n", r.Date, r.Machine)
	p("| scenario | postrelay | Watermill forwarder | ratio | target |\n|---|---|---|---|---|\n")
	d := r.Drain
	p("| drain %d records, %d keys, memory broker, 1 relay | %.0f rec/s (%.1f µs machine CPU per record) | %.0f rec/s | %.1f× | ≥ 100,000 rec/s, ≥ 5× |\n",
		d.Records, d.Keys, d.RecordsPerSec, d.CPUPerRecordUS, d.BaselineRecPerSec, d.Ratio)
	if len(r.TracingOffRecPerSec) > 0 {
		p("| the same drain again, tracing off (%d runs) | %s rec/s, median %.0f | | | |\n",
			len(r.TracingOffRecPerSec), joinRates(r.TracingOffRecPerSec), median(r.TracingOffRecPerSec))
	}
	dd := r.DrainDelay
	p("| drain, 1 ms publish delay, 1 relay | %.0f rec/s | %.0f rec/s | %.1f× | ≥ 30,000 rec/s |\n",
		dd.RecordsPerSec, dd.BaselineRecPerSec, dd.Ratio)
	p("| drain 1,000,000 records: peak RSS of the relay | %.0f MB (%.0f rec/s) | | | ≤ 150 MB |\n",
		r.DrainMillion.PeakRSSMB, r.DrainMillion.RecordsPerSec)
	if len(r.TracingOnRecPerSec) > 0 {
		p("| drain with tracing on (span per attempt), alternated with the runs above | %s rec/s, median %.0f: cost %.1f %% by medians | | | cost ≤ 15 %% |\n",
			joinRates(r.TracingOnRecPerSec), median(r.TracingOnRecPerSec), r.TracingCostPc)
	} else {
		p("| drain with tracing on (span per attempt) | %.0f rec/s (cost %.1f %%) | | | cost ≤ 15 %% |\n",
			r.DrainTracing.RecordsPerSec, r.TracingCostPc)
	}
	for _, l := range []*LatencyResult{r.Latency1000, r.Latency5000} {
		target := "p99 ≤ 20 ms"
		if l.TargetRate >= 5000 {
			target = "p99 ≤ 50 ms"
		}
		base := "—"
		if l.Baseline != "" {
			base = fmt.Sprintf("p50 %.1f / p99 %.1f ms at %.0f/s", l.BaselineP50MS, l.BaselineP99MS, l.BaselineAchievedRate)
		}
		ratio := ""
		if l.P99Ratio > 0 {
			ratio = fmt.Sprintf("p99 %.2f× the forwarder's", 1/l.P99Ratio)
		}
		p("| latency at %d rec/s (achieved %.0f) | p50 %.1f / p90 %.1f / p99 %.1f / max %.1f ms (COMMIT itself p99 %.1f ms; %.0f µs machine CPU per record) | %s | %s | %s |\n",
			l.TargetRate, l.AchievedRate, l.P50MS, l.P90MS, l.P99MS, l.MaxMS, l.CommitP99MS, l.CPUPerRecordUS, base, ratio, target)
	}
	w := r.Write
	p("| write: small business tx + 1 outbox record (%d clients) | %.0f tx/s vs %.0f without: +%.1f %% cost | | | ≤ 15 %% |\n",
		w.Clients, w.TxPerSecWith, w.TxPerSecWithout, w.OverheadPct)
	p("| write: same record via `QueueWrite` in the business statement's pgx.Batch | %.0f tx/s: +%.1f %% cost | | | ≤ 15 %% |\n",
		w.TxPerSecPipelined, w.PipelinedOverheadPct)
	p("| write: bulk, %d records per tx | %.0f rec/s | | | ≥ 50,000 rec/s |\n", w.BulkBatch, w.BulkRecordsPerSec)
	s := r.Scale
	p("\nScale (%d records, %d keys, %d partitions, %.0f ms publish delay, %d publishes in flight per relay):\n\n",
		s.Records, s.Keys, s.Partitions, s.PublishDelayMS, s.Concurrency)
	p("| relays | seconds | records/s | efficiency |\n|---|---|---|---|\n")
	for _, pt := range s.Points {
		p("| %d | %.2f | %.0f | %.2f |\n", pt.Instances, pt.Seconds, pt.RecordsPerSec, pt.Efficiency)
	}
	p("\n![scale chart](scale.svg)\n\n")
	return b.String()
}

// joinRates formats rates as "61,234 / 58,901".
func joinRates(vs []float64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("%.0f", v)
	}
	return strings.Join(parts, " / ")
}
