package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/engine"
)

// DrainResult is the drain scenario's JSON.
type DrainResult struct {
	Scenario       string  `json:"scenario"`
	Records        int     `json:"records"`
	Keys           int     `json:"keys"`
	Partitions     int     `json:"partitions"`
	Instances      int     `json:"instances"`
	PublishDelayMS float64 `json:"publish_delay_ms"`
	Concurrency    int     `json:"instance_concurrency"`
	Tracing        string  `json:"tracing"`
	Seconds        float64 `json:"seconds"`
	RecordsPerSec  float64 `json:"records_per_sec"`
	PeakRSSMB      float64 `json:"peak_rss_mb"`
	// Machine CPU (every process) per record during the timed window, and
	// of that the relay processes' and PostgreSQL's processes'.
	CPUPerRecordUS      float64 `json:"cpu_us_per_record"`
	RelayCPUPerRecordUS float64 `json:"relay_cpu_us_per_record,omitempty"`
	PGCPUPerRecordUS    float64 `json:"postgres_cpu_us_per_record,omitempty"`
	// The forwarder's drain, when it ran.
	Baseline          string  `json:"baseline,omitempty"`
	BaselineSeconds   float64 `json:"baseline_seconds,omitempty"`
	BaselineRecPerSec float64 `json:"baseline_records_per_sec,omitempty"`
	Ratio             float64 `json:"ratio,omitempty"`
	// Every baseline's drain (the forwarder's repeated above), in run order.
	Baselines []BaselineDrain `json:"baselines,omitempty"`
	River     *riverConfig    `json:"river_config,omitempty"`
	Catalogs  *CatalogReport  `json:"catalogs,omitempty"`
	// With --rounds > 1: every system's drains, round by round (postrelay
	// first in odd rounds, last in even ones), and their medians.
	Rounds  [][]BaselineDrain `json:"rounds,omitempty"`
	Medians []DrainMedian     `json:"medians,omitempty"`
}

// DrainMedian is one system's median over the rounds, with the spread.
type DrainMedian struct {
	System           string  `json:"system"`
	RecordsPerSec    float64 `json:"records_per_sec"`
	MinRecordsPerSec float64 `json:"min_records_per_sec"`
	MaxRecordsPerSec float64 `json:"max_records_per_sec"`
	CPUPerRecordUS   float64 `json:"cpu_us_per_record"`
	// postrelay's medians: the relay processes' and PostgreSQL's share.
	RelayCPUPerRecordUS float64 `json:"relay_cpu_us_per_record,omitempty"`
	PGCPUPerRecordUS    float64 `json:"postgres_cpu_us_per_record,omitempty"`
	VersusPostrelay     float64 `json:"versus_postrelay"` // median rec/s over postrelay's, - 1
}

// BaselineDrain is one baseline system's drain of the same records.
type BaselineDrain struct {
	System         string  `json:"system"`
	Records        int     `json:"records"`
	Seconds        float64 `json:"seconds"`
	RecordsPerSec  float64 `json:"records_per_sec"`
	CPUPerRecordUS float64 `json:"cpu_us_per_record"`
	// postrelay's: the relay processes' and PostgreSQL's share.
	RelayCPUPerRecordUS float64 `json:"relay_cpu_us_per_record,omitempty"`
	PGCPUPerRecordUS    float64 `json:"postgres_cpu_us_per_record,omitempty"`
	// postrelay's rate over this one's.
	Ratio float64 `json:"ratio"`
}

// baselineDrain drains records through one baseline system.
func baselineDrain(ctx context.Context, pool *pgxpool.Pool, o options, sys string, records int, postrelayRate float64, out io.Writer) (BaselineDrain, error) {
	b := BaselineDrain{System: sys, Records: records}
	var err error
	switch sys {
	case sysForwarder:
		fo := o
		fo.records = records
		cpu0 := machineCPU()
		b.Seconds, err = forwarderDrain(ctx, pool, fo, out)
		b.CPUPerRecordUS = cpuPerRecordUS(machineCPU()-cpu0, records)
	case sysRiver:
		b.Seconds, b.CPUPerRecordUS, err = riverDrain(ctx, o, records, out)
	case sysRetention:
		ro := o
		ro.records = records
		if ro.retention <= 0 {
			ro.retention = 24 * time.Hour
		}
		var r *DrainResult
		if r, err = drainOnce(ctx, pool, ro, 1, out); err == nil {
			b.Seconds, b.CPUPerRecordUS = r.Seconds, r.CPUPerRecordUS
			b.RelayCPUPerRecordUS, b.PGCPUPerRecordUS = r.RelayCPUPerRecordUS, r.PGCPUPerRecordUS
		}
	default:
		err = fmt.Errorf("unknown system %q", sys)
	}
	if err != nil {
		return b, fmt.Errorf("baseline %s: %w", sys, err)
	}
	b.RecordsPerSec = float64(records) / b.Seconds
	ratio := ""
	if postrelayRate > 0 { // 0: rounds, which compare medians at the end
		b.Ratio = postrelayRate / b.RecordsPerSec
		ratio = fmt.Sprintf("  (postrelay %.1fx)", b.Ratio)
	}
	fmt.Fprintf(out, "%-28s %10d records %8.2fs %10.0f rec/s  machine CPU %.1f µs/record%s\n",
		sys, records, b.Seconds, b.RecordsPerSec, b.CPUPerRecordUS, ratio)
	return b, nil
}

// addBaseline records b in res (and in the forwarder's fields).
func (res *DrainResult) addBaseline(b BaselineDrain) {
	res.Baselines = append(res.Baselines, b)
	if b.System == sysForwarder {
		res.Baseline, res.BaselineSeconds, res.BaselineRecPerSec, res.Ratio = b.System, b.Seconds, b.RecordsPerSec, b.Ratio
	}
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
	baselines, err := parseBaselines(o.baseline)
	if err != nil {
		return nil, err
	}
	if o.rounds > 1 {
		return drainRounds(ctx, pool, o, n, baselines, out)
	}
	res, err := drainOnce(ctx, pool, o, n, out)
	if err != nil {
		return nil, err
	}
	res.Catalogs = o.catalogs
	for _, sys := range baselines {
		b, err := baselineDrain(ctx, pool, o, sys, o.records, res.RecordsPerSec, out)
		if err != nil {
			return nil, err
		}
		res.addBaseline(b)
		if sys == sysRiver {
			rc := o.river
			res.River = &rc
		}
	}
	return res, nil
}

// drainRounds runs the drain and every baseline o.rounds times, in the
// order given in odd rounds and reversed in even ones (A B, B A, ...), so
// that neither system always runs right after the other (a drain leaves
// WAL to checkpoint and dead catalog rows behind), and prints each
// system's medians.
func drainRounds(ctx context.Context, pool *pgxpool.Pool, o options, n int, baselines []string, out io.Writer) (*DrainResult, error) {
	systems := append([]string{"postrelay"}, baselines...)
	var res *DrainResult
	for round := range o.rounds {
		order := slices.Clone(systems)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		fmt.Fprintf(out, "round %d of %d: %s\n", round+1, o.rounds, strings.Join(order, ", "))
		runs := make([]BaselineDrain, 0, len(order))
		for _, sys := range order {
			if sys != "postrelay" {
				b, err := baselineDrain(ctx, pool, o, sys, o.records, 0, out)
				if err != nil {
					return nil, err
				}
				runs = append(runs, b)
				continue
			}
			r, err := drainOnce(ctx, pool, o, n, out)
			if err != nil {
				return nil, err
			}
			if res == nil {
				res = r
				res.Catalogs = o.catalogs
			}
			runs = append(runs, BaselineDrain{System: sys, Records: r.Records, Seconds: r.Seconds,
				RecordsPerSec: r.RecordsPerSec, CPUPerRecordUS: r.CPUPerRecordUS,
				RelayCPUPerRecordUS: r.RelayCPUPerRecordUS, PGCPUPerRecordUS: r.PGCPUPerRecordUS})
		}
		res.Rounds = append(res.Rounds, runs)
	}
	var base float64
	for _, sys := range systems {
		var rates, cpus, relayCPUs, pgCPUs []float64
		for _, runs := range res.Rounds {
			for _, b := range runs {
				if b.System == sys {
					rates, cpus = append(rates, b.RecordsPerSec), append(cpus, b.CPUPerRecordUS)
					relayCPUs, pgCPUs = append(relayCPUs, b.RelayCPUPerRecordUS), append(pgCPUs, b.PGCPUPerRecordUS)
				}
			}
		}
		m := DrainMedian{System: sys, RecordsPerSec: median(rates), MinRecordsPerSec: slices.Min(rates),
			MaxRecordsPerSec: slices.Max(rates), CPUPerRecordUS: median(cpus),
			RelayCPUPerRecordUS: median(relayCPUs), PGCPUPerRecordUS: median(pgCPUs)}
		if sys == "postrelay" {
			base = m.RecordsPerSec
		}
		m.VersusPostrelay = m.RecordsPerSec/base - 1
		res.Medians = append(res.Medians, m)
		split := ""
		if m.RelayCPUPerRecordUS > 0 {
			split = fmt.Sprintf(" (relays %.1f, PostgreSQL %.1f)", m.RelayCPUPerRecordUS, m.PGCPUPerRecordUS)
		}
		fmt.Fprintf(out, "median of %d rounds %-22s %10.0f rec/s [%.0f–%.0f]  machine CPU %.1f µs/record%s  %+.1f %% vs postrelay\n",
			o.rounds, sys, m.RecordsPerSec, m.MinRecordsPerSec, m.MaxRecordsPerSec, m.CPUPerRecordUS, split, 100*m.VersusPostrelay)
	}
	return res, nil
}

// drainOnce starts n relays, commits the preload in one transaction, and
// times until the records table is empty.
func drainOnce(ctx context.Context, pool *pgxpool.Pool, o options, n int, out io.Writer) (*DrainResult, error) {
	return drainWith(ctx, pool, o, n, out, nil)
}

// drainObserver runs beside a drain: prepared on the schema before the
// preload commits, begun right after the commit (when the clock starts),
// stopped when the outbox is empty.
type drainObserver interface {
	prepare(ctx context.Context, cfg engine.Config) error
	begin()
	stop() error
}

// drainWith is drainOnce with an observer (nil for none).
func drainWith(ctx context.Context, pool *pgxpool.Pool, o options, n int, out io.Writer, obs drainObserver) (*DrainResult, error) {
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
	// Each partition's newest record, read before the commit (outside the
	// timed window): a partition actor completes its records in id order,
	// so the outbox is drained once these are gone. Probing them costs one
	// index lookup per partition; probing the table itself scans the front
	// of the heap, where the delivered rows lie dead (one probe measured
	// 10 ms mid-drain, and it ran every 5 ms).
	tbl := pgx.Identifier{cfg.Schema, "records"}.Sanitize()
	var lastP []int32
	var lastID []int64
	if err := tx.QueryRow(ctx, "SELECT array_agg(partition), array_agg(max_id) FROM (SELECT partition, max(id) AS max_id FROM "+tbl+" GROUP BY partition) s").Scan(&lastP, &lastID); err != nil {
		_ = tx.Rollback(ctx)
		return nil, err
	}
	if obs != nil {
		if err := obs.prepare(ctx, cfg); err != nil {
			_ = tx.Rollback(ctx)
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		if obs != nil {
			err = errors.Join(err, obs.stop())
		}
		return nil, err
	}
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.cmd.Process.Pid
	}
	split := startCPUSplit(pids)
	start, cpu0 := time.Now(), machineCPU()
	if obs != nil {
		obs.begin()
	}
	end, err := waitDrained(ctx, pool, cfg, lastP, lastID, n, start, out)
	cpu := machineCPU() - cpu0
	relayCPU, pgCPU := split.since()
	if obs != nil {
		err = errors.Join(err, obs.stop())
	}
	if err != nil {
		return nil, err
	}
	secs := end.Sub(start).Seconds()
	res := &DrainResult{
		Scenario: "drain", Records: o.records, Keys: o.keys, Partitions: o.partitions, Instances: n,
		PublishDelayMS: float64(o.publishDelay) / float64(time.Millisecond), Concurrency: o.concurrency, Tracing: o.tracing,
		Seconds: secs, RecordsPerSec: float64(o.records) / secs, PeakRSSMB: peakRSSMB(procs),
		CPUPerRecordUS:      cpuPerRecordUS(cpu, o.records),
		RelayCPUPerRecordUS: cpuPerRecordUS(relayCPU, o.records),
		PGCPUPerRecordUS:    cpuPerRecordUS(pgCPU, o.records),
	}
	fmt.Fprintf(out, "%-28s %10d records %8.2fs %10.0f rec/s  peak RSS %.0f MB  machine CPU %.1f µs/record (relays %.1f, PostgreSQL %.1f)\n",
		fmt.Sprintf("postrelay, %d relay(s)", n), o.records, secs, res.RecordsPerSec, res.PeakRSSMB, res.CPUPerRecordUS,
		res.RelayCPUPerRecordUS, res.PGCPUPerRecordUS)
	return res, nil
}

// waitDrained waits until the records table is empty and returns when it
// became so: first until every partition's newest record is gone (cheap
// index probes every 5 ms), then it confirms that the whole table is empty,
// which must hold by then; if it does not, it keeps probing the table and
// the clock runs on.
func waitDrained(ctx context.Context, pool *pgxpool.Pool, cfg engine.Config, lastP []int32, lastID []int64, relays int, start time.Time, out io.Writer) (time.Time, error) {
	tbl := pgx.Identifier{cfg.Schema, "records"}.Sanitize()
	probe := "SELECT count(*) FROM " + tbl + " r JOIN unnest($1::int[], $2::bigint[]) AS t(p, id) ON r.partition = t.p AND r.id = t.id"
	last := start
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	newestGone := false
	left := len(lastP)
	for {
		if !newestGone {
			if err := pool.QueryRow(ctx, probe, lastP, lastID).Scan(&left); err != nil {
				return time.Time{}, err
			}
			newestGone = left == 0
		}
		if newestGone {
			// Must hold by now; if it did not, the clock runs on until it
			// does, so the figure can never be too good.
			end := time.Now()
			var more bool
			if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+tbl+")").Scan(&more); err != nil {
				return time.Time{}, err
			}
			if !more {
				return end, nil
			}
		}
		if time.Since(last) >= 2*time.Second {
			last = time.Now()
			fmt.Fprintf(out, "  … %d relays: %d of %d partitions still hold their last preloaded record (%.1fs)\n",
				relays, left, len(lastP), time.Since(start).Seconds())
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-tick.C:
		}
	}
}
