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
	cmd := "go run ./bench all"
	if len(r.Baselines) > 0 {
		cmd += " --baseline " + strings.Join(r.Baselines, ",")
	}
	p("Run on %s — %s. Command: `%s`.\n\n", r.Date, r.Machine, cmd)
	if r.River != nil {
		p("River: v0.51.2, riverpgxv5, %s.\n\n", r.River)
	}
	if r.Catalogs != nil {
		p("Catalogs: %s.\n\n", r.Catalogs.Summary())
	}
	p("| scenario | postrelay | River | Watermill forwarder | ratio | target |\n|---|---|---|---|---|---|\n")
	d := r.Drain
	if m := d.median("postrelay"); m != nil {
		p("| drain %d records, %d keys, memory broker, 1 relay, medians of %d alternated rounds | %.0f rec/s [%.0f–%.0f] (%.1f µs machine CPU per record) | %s | %s | %s | ≥ 100,000 rec/s, ≥ 5× |\n",
			d.Records, d.Keys, len(d.Rounds), m.RecordsPerSec, m.MinRecordsPerSec, m.MaxRecordsPerSec, m.CPUPerRecordUS,
			drainCell(d, sysRiver), drainCell(d, sysForwarder), drainRatios(d))
	} else {
		p("| drain %d records, %d keys, memory broker, 1 relay | %.0f rec/s (%.1f µs machine CPU per record) | %s | %s | %s | ≥ 100,000 rec/s, ≥ 5× |\n",
			d.Records, d.Keys, d.RecordsPerSec, d.CPUPerRecordUS, drainCell(d, sysRiver), drainCell(d, sysForwarder), drainRatios(d))
	}
	if len(r.TracingOffRecPerSec) > 0 {
		p("| the same drain again, tracing off (%d runs) | %s rec/s, median %.0f | | | | |\n",
			len(r.TracingOffRecPerSec), joinRates(r.TracingOffRecPerSec), median(r.TracingOffRecPerSec))
	}
	dd := r.DrainDelay
	p("| drain, 1 ms publish delay, 1 relay | %.0f rec/s | %s | %s | %s | ≥ 30,000 rec/s |\n",
		dd.RecordsPerSec, drainCell(dd, sysRiver), drainCell(dd, sysForwarder), drainRatios(dd))
	p("| drain 1,000,000 records: peak RSS of the relay | %.0f MB (%.0f rec/s) | | | | ≤ 150 MB |\n",
		r.DrainMillion.PeakRSSMB, r.DrainMillion.RecordsPerSec)
	if len(r.TracingOnRecPerSec) > 0 {
		p("| drain with tracing on (span per attempt), alternated with the runs above | %s rec/s, median %.0f: cost %.1f %% by medians | | | | cost ≤ 15 %% |\n",
			joinRates(r.TracingOnRecPerSec), median(r.TracingOnRecPerSec), r.TracingCostPc)
	} else {
		p("| drain with tracing on (span per attempt) | %.0f rec/s (cost %.1f %%) | | | | cost ≤ 15 %% |\n",
			r.DrainTracing.RecordsPerSec, r.TracingCostPc)
	}
	for _, l := range []*LatencyResult{r.Latency1000, r.Latency3000, r.Latency5000} {
		if l == nil {
			continue
		}
		target := "p99 ≤ 20 ms"
		if l.TargetRate >= 3000 {
			target = "p99 ≤ 50 ms"
		}
		if len(l.Systems) == 0 { // a run from before the River baseline: one round, clock at COMMIT
			base := "—"
			if l.Baseline != "" {
				base = fmt.Sprintf("p50 %.1f / p99 %.1f ms at %.0f/s", l.BaselineP50MS, l.BaselineP99MS, l.BaselineAchievedRate)
			}
			ratio := ""
			if l.P99Ratio > 0 {
				ratio = fmt.Sprintf("p99 %.2f× the forwarder's", 1/l.P99Ratio)
			}
			p("| latency at %d rec/s (achieved %.0f), from just before COMMIT | p50 %.1f / p90 %.1f / p99 %.1f / max %.1f ms (COMMIT itself p99 %.1f ms; %.0f µs machine CPU per record) | — | %s | %s | %s |\n",
				l.TargetRate, l.AchievedRate, l.P50MS, l.P90MS, l.P99MS, l.MaxMS, l.CommitP99MS, l.CPUPerRecordUS, base, ratio, target)
			continue
		}
		cell := func(sys string) string {
			s := systemSummary(l.Systems, sys)
			if s == nil {
				return "—"
			}
			return fmt.Sprintf("p50 %.1f / p99 %.1f ms at %.0f/s", s.P50MS.Median, s.P99MS.Median, s.AchievedRate.Median)
		}
		var ratios []string
		for _, sys := range []string{sysRiver, sysForwarder} {
			if s := systemSummary(l.Systems, sys); s != nil && s.P99MS.Median > 0 {
				ratios = append(ratios, fmt.Sprintf("p99 %.2f× %s's", l.P99MS/s.P99MS.Median, displayName(sys)))
			}
		}
		target = "achieved ≥ the best peer's, p99 ≤ the best peer's"
		if l.TargetRate <= 1000 {
			target = "p99 ≤ 0.5× the better peer's; p50 and CPU per record ≤ its"
		}
		p("| steady load at %d rec/s offered (achieved %.0f), medians of %d rounds | p50 %.1f / p90 %.1f / p99 %.1f / max %.1f ms (COMMIT itself p99 %.1f ms; %.0f µs machine CPU per record) | %s | %s | %s | %s |\n",
			l.TargetRate, l.AchievedRate, l.Rounds, l.P50MS, l.P90MS, l.P99MS, l.MaxMS, l.CommitP99MS, l.CPUPerRecordUS,
			cell(sysRiver), cell(sysForwarder), strings.Join(ratios, ", "), target)
	}
	w := r.Write
	p("| write: small business tx + 1 outbox record (%d clients) | %.0f tx/s vs %.0f without: +%.1f %% cost | | | | ≤ 15 %% |\n",
		w.Clients, w.TxPerSecWith, w.TxPerSecWithout, w.OverheadPct)
	p("| write: same record via `QueueWrite` in the business statement's pgx.Batch | %.0f tx/s: +%.1f %% cost | | | | ≤ 15 %% |\n",
		w.TxPerSecPipelined, w.PipelinedOverheadPct)
	if w.TxPerSecPlainRow > 0 {
		p("| write: the record's bytes into a plain table of the outbox's shape, in the same batch (the row alone, no outbox) | %.0f tx/s: +%.1f %% cost; `QueueWrite` %+.1f %% against it | | | | |\n",
			w.TxPerSecPlainRow, w.PlainRowOverheadPct, -w.PipelinedVsPlainRowPct)
	}
	p("| write: bulk, %d records per tx | %.0f rec/s | | | | ≥ 50,000 rec/s |\n", w.BulkBatch, w.BulkRecordsPerSec)
	steadyMarkdown(&b, r)
	s := r.Scale
	per := " per relay (N relays drain N times as many)"
	if s.FixedTotal {
		per = " in every drain"
	}
	p("\nScale (%d records and %d keys%s, %d partitions, %.0f ms publish delay, %d publishes in flight per relay; medians of %d rounds):\n\n",
		s.Records, s.Keys, per, s.Partitions, s.PublishDelayMS, s.Concurrency, max(s.Rounds, 1))
	p("| relays | seconds | records/s | efficiency | records/s per round |\n|---|---|---|---|---|\n")
	for _, pt := range s.Points {
		p("| %d | %.2f | %.0f | %.2f | %s |\n", pt.Instances, pt.Seconds, pt.RecordsPerSec, pt.Efficiency, joinRates(pt.RoundRates))
	}
	p("\n![scale chart](scale.svg)\n\n")
	return b.String()
}

// steadyMarkdown renders the steady-load rounds and the COMMIT cost, when
// the run has them.
func steadyMarkdown(b *strings.Builder, r *AllResult) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	sp := func(s Spread, f string) string {
		if s.Min == s.Max {
			return fmt.Sprintf(f, s.Median)
		}
		return fmt.Sprintf(f+" ("+f+"–"+f+")", s.Median, s.Min, s.Max)
	}
	for _, l := range []*LatencyResult{r.Latency1000, r.Latency3000, r.Latency5000} {
		if l == nil || len(l.Systems) == 0 {
			continue
		}
		p("\nSteady load at %d records/s offered: medians of %d alternated rounds (min–max), %.0f s each after %.0f s of warm-up; latency from just before the business INSERT to Publish (after COMMIT: from COMMIT's return, the relay's own delay):\n\n",
			l.TargetRate, l.Rounds, l.DurationSec, l.WarmupSec)
		p("| system | committed/s | p50 ms | p99 ms | max ms | p99 from COMMIT ms | after COMMIT p50 / p99 ms | COMMIT p50 / p99 ms | COMMIT p99 / plain table's | machine CPU µs per record |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range l.Systems {
			vs := ""
			if s.CommitP99VsPlain > 0 {
				vs = fmt.Sprintf("%.2f×", s.CommitP99VsPlain)
			}
			if s.System == sysPlain {
				p("| plain table (no relay) | %s | | | | | | %s / %s | 1 | %s |\n", sp(s.AchievedRate, "%.0f"),
					sp(s.CommitP50MS, "%.2f"), sp(s.CommitP99MS, "%.1f"), sp(s.CPUPerRecordUS, "%.0f"))
				continue
			}
			after := "–"
			if s.AfterCommitP99MS.Max > 0 { // runs before the figure existed have none
				after = sp(s.AfterCommitP50MS, "%.2f") + " / " + sp(s.AfterCommitP99MS, "%.1f")
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s |\n", displayName(s.System), sp(s.AchievedRate, "%.0f"),
				sp(s.P50MS, "%.1f"), sp(s.P99MS, "%.1f"), sp(s.MaxMS, "%.0f"), sp(s.FromCommitP99MS, "%.1f"), after,
				sp(s.CommitP50MS, "%.2f"), sp(s.CommitP99MS, "%.1f"), vs, sp(s.CPUPerRecordUS, "%.0f"))
		}
	}
	if r.Write == nil || len(r.Write.CommitCost) == 0 {
		return
	}
	p("\nCOMMIT cost (issue 11 goal 3: an outbox record's COMMIT p99 within 10 %% of the same transaction writing the same bytes into a plain table); medians of alternated rounds (min–max):\n\n")
	p("| tx/s | system | achieved tx/s | COMMIT p50 ms | COMMIT p99 ms | p50 / plain | p99 / plain |\n|---|---|---|---|---|---|---|\n")
	for _, c := range r.Write.CommitCost {
		for _, s := range c.Systems {
			r50, r99 := "1", "1"
			if s.System != sysPlain {
				r50, r99 = fmt.Sprintf("%.2f×", s.CommitP50VsPlain), fmt.Sprintf("%.2f×", s.CommitP99VsPlain)
			}
			p("| %d | %s | %s | %s | %s | %s | %s |\n", c.Rate, displayName(s.System), sp(s.AchievedRate, "%.0f"),
				sp(s.CommitP50MS, "%.2f"), sp(s.CommitP99MS, "%.1f"), r50, r99)
		}
	}
}

func systemSummary(ss []SystemSummary, sys string) *SystemSummary {
	for i := range ss {
		if ss[i].System == sys {
			return &ss[i]
		}
	}
	return nil
}

func displayName(sys string) string {
	switch sys {
	case sysRiver:
		return "River"
	case sysForwarder:
		return "the forwarder"
	case sysPlain:
		return "plain table"
	}
	return sys
}

// drainCell is one baseline's drain rate, or — if it did not run.
func drainCell(d *DrainResult, sys string) string {
	if m := d.median(sys); m != nil {
		return fmt.Sprintf("%.0f rec/s [%.0f–%.0f] (%d records; %.1f µs machine CPU per record)",
			m.RecordsPerSec, m.MinRecordsPerSec, m.MaxRecordsPerSec, d.Records, m.CPUPerRecordUS)
	}
	for _, b := range d.Baselines {
		if b.System == sys {
			return fmt.Sprintf("%.0f rec/s (%d records; %.1f µs machine CPU per record)", b.RecordsPerSec, b.Records, b.CPUPerRecordUS)
		}
	}
	if sys == sysForwarder && d.Baseline == sysForwarder { // a run from before Baselines
		return fmt.Sprintf("%.0f rec/s", d.BaselineRecPerSec)
	}
	return "—"
}

// median is sys's median over a drain's rounds (nil: the drain ran once).
func (d *DrainResult) median(sys string) *DrainMedian {
	for i := range d.Medians {
		if d.Medians[i].System == sys {
			return &d.Medians[i]
		}
	}
	return nil
}

// drainRatios is postrelay's rate over each baseline's (by medians when
// the drain ran in rounds).
func drainRatios(d *DrainResult) string {
	var parts []string
	if pm := d.median("postrelay"); pm != nil {
		for _, m := range d.Medians {
			if m.System != "postrelay" && m.RecordsPerSec > 0 {
				parts = append(parts, fmt.Sprintf("%.1f× %s", pm.RecordsPerSec/m.RecordsPerSec, displayName(m.System)))
			}
		}
		return strings.Join(parts, ", ")
	}
	for _, b := range d.Baselines {
		parts = append(parts, fmt.Sprintf("%.1f× %s", b.Ratio, displayName(b.System)))
	}
	if len(parts) == 0 && d.Ratio > 0 {
		return fmt.Sprintf("%.1f×", d.Ratio)
	}
	return strings.Join(parts, ", ")
}

// joinRates formats rates as "61,234 / 58,901".
func joinRates(vs []float64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("%.0f", v)
	}
	return strings.Join(parts, " / ")
}
