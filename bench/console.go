package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/adapters/console"
	"github.com/postrelay/postrelay/engine"
)

// consolePolls are the API calls of the console's three refreshing pages:
// the overview (status, history), the partitions (partitions; the status
// is cached in the page) and the stuck keys.
var consolePolls = []string{"/api/v1/status", "/api/v1/history", "/api/v1/partitions", "/api/v1/stuck-keys"}

// ConsoleResult is the console scenario's JSON: the cost to a relay's
// drain of an operator console polling it.
type ConsoleResult struct {
	Scenario   string  `json:"scenario"`
	Records    int     `json:"records"`
	Keys       int     `json:"keys"`
	Partitions int     `json:"partitions"`
	IntervalS  float64 `json:"poll_interval_s"`
	Rounds     int     `json:"rounds"`
	// The drains in run order; each round runs both, alternating which
	// goes first.
	Runs []ConsoleRun `json:"runs"`
	// Drain rate and machine CPU per record over the rounds, without and
	// with the console polling.
	Without    Spread `json:"without_records_per_sec"`
	With       Spread `json:"with_records_per_sec"`
	WithoutCPU Spread `json:"without_cpu_us_per_record"`
	WithCPU    Spread `json:"with_cpu_us_per_record"`
	// 1 - median(with) / median(without), in percent (negative: the
	// console's drains were faster, i.e. within the noise).
	RateCostPct float64 `json:"rate_cost_pct"`
	// median(with CPU) / median(without CPU) - 1, in percent.
	CPUCostPct float64 `json:"cpu_cost_pct"`
	// One poll (the four calls, one after another) over every polling
	// drain: its duration, and how many polls ran.
	PollMS Spread `json:"poll_ms"`
	Polls  int    `json:"polls"`
	// The console's PostgreSQL backends' CPU time over the drain's machine
	// CPU time, in percent, over the polling drains.
	ConsoleDBCPUPct Spread `json:"console_db_cpu_pct"`
}

// ConsoleRun is one drain.
type ConsoleRun struct {
	Round          int     `json:"round"`
	Console        bool    `json:"console"`
	Seconds        float64 `json:"seconds"`
	RecordsPerSec  float64 `json:"records_per_sec"`
	CPUPerRecordUS float64 `json:"cpu_us_per_record"`
	Polls          int     `json:"polls"`
	PollMedianMS   float64 `json:"poll_median_ms,omitempty"`
	PollMaxMS      float64 `json:"poll_max_ms,omitempty"`
	// Each call's slowest answer, ms.
	CallMaxMS map[string]float64 `json:"call_max_ms,omitempty"`
	// CPU time of the console's PostgreSQL backends (from /proc), and its
	// share of the drain's machine CPU.
	ConsoleDBCPUMS  float64 `json:"console_db_cpu_ms,omitempty"`
	ConsoleDBCPUPct float64 `json:"console_db_cpu_pct,omitempty"`
}

// runConsole drains --records (default 200,000) through one relay
// (memory broker) --rounds times without and with a console polling its
// pages' API calls every --console-interval, alternated.
func runConsole(ctx context.Context, o options, out io.Writer) (*ConsoleResult, error) {
	o.records = orInt(o.records, 200_000)
	o.keys = orInt(o.keys, 1000)
	o.publishDelay = orDur(o.publishDelay, 0)
	o.rounds = orInt(o.rounds, 3)
	if o.consoleInterval <= 0 {
		return nil, fmt.Errorf("--console-interval %v: must be positive", o.consoleInterval)
	}
	pool, err := openPool(ctx, o, 8)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	res := &ConsoleResult{Scenario: "console", Records: o.records, Keys: o.keys, Partitions: o.partitions,
		IntervalS: o.consoleInterval.Seconds(), Rounds: o.rounds}
	fmt.Fprintf(out, "console: %d records, %d keys, 1 relay, memory broker; console polls %v every %v\n",
		o.records, o.keys, consolePolls, o.consoleInterval)
	var polls []float64
	for round := 1; round <= o.rounds; round++ {
		order := []bool{false, true}
		if round%2 == 0 {
			order = []bool{true, false}
		}
		for _, withConsole := range order {
			var p *consolePoller
			var obs drainObserver
			if withConsole {
				p = &consolePoller{o: o}
				obs = p
			}
			d, err := drainWith(ctx, pool, o, 1, io.Discard, obs)
			if err != nil {
				return nil, err
			}
			r := ConsoleRun{Round: round, Console: withConsole, Seconds: d.Seconds, RecordsPerSec: d.RecordsPerSec,
				CPUPerRecordUS: d.CPUPerRecordUS}
			label := "without console"
			if p != nil {
				label = "with console"
				r.Polls, r.CallMaxMS = len(p.took), p.callMax
				r.ConsoleDBCPUMS = float64(p.dbCPU.Microseconds()) / 1000
				r.ConsoleDBCPUPct = 100 * r.ConsoleDBCPUMS / (r.CPUPerRecordUS * float64(o.records) / 1000)
				if len(p.took) > 0 {
					r.PollMedianMS, r.PollMaxMS = median(p.took), slices.Max(p.took)
				}
				polls = append(polls, p.took...)
			}
			res.Runs = append(res.Runs, r)
			fmt.Fprintf(out, "round %d %-16s %8.2fs %10.0f rec/s  machine CPU %.1f µs/record",
				round, label, r.Seconds, r.RecordsPerSec, r.CPUPerRecordUS)
			if p != nil {
				fmt.Fprintf(out, "  polls %d (median %.1f ms, max %.1f ms; slowest call", r.Polls, r.PollMedianMS, r.PollMaxMS)
				for _, path := range consolePolls {
					fmt.Fprintf(out, " %s %.1f ms", path[len("/api/v1/"):], r.CallMaxMS[path])
				}
				fmt.Fprintf(out, "; console's backends %.0f ms CPU, %.1f %% of the drain's)", r.ConsoleDBCPUMS, r.ConsoleDBCPUPct)
			}
			fmt.Fprintln(out)
		}
	}
	pick := func(console bool, f func(ConsoleRun) float64) Spread {
		var vs []float64
		for _, r := range res.Runs {
			if r.Console == console {
				vs = append(vs, f(r))
			}
		}
		return Spread{Median: median(vs), Min: slices.Min(vs), Max: slices.Max(vs)}
	}
	rate := func(r ConsoleRun) float64 { return r.RecordsPerSec }
	cpu := func(r ConsoleRun) float64 { return r.CPUPerRecordUS }
	res.Without, res.With = pick(false, rate), pick(true, rate)
	res.WithoutCPU, res.WithCPU = pick(false, cpu), pick(true, cpu)
	res.RateCostPct = 100 * (1 - res.With.Median/res.Without.Median)
	res.CPUCostPct = 100 * (res.WithCPU.Median/res.WithoutCPU.Median - 1)
	res.ConsoleDBCPUPct = pick(true, func(r ConsoleRun) float64 { return r.ConsoleDBCPUPct })
	res.Polls = len(polls)
	if len(polls) > 0 {
		res.PollMS = Spread{Median: median(polls), Min: slices.Min(polls), Max: slices.Max(polls)}
	}
	fmt.Fprintf(out, "drain without console: median %.0f rec/s (%.0f–%.0f), %.1f µs/record\n",
		res.Without.Median, res.Without.Min, res.Without.Max, res.WithoutCPU.Median)
	fmt.Fprintf(out, "drain with console:    median %.0f rec/s (%.0f–%.0f), %.1f µs/record\n",
		res.With.Median, res.With.Min, res.With.Max, res.WithCPU.Median)
	fmt.Fprintf(out, "cost of the console: %.1f %% of the drain rate by medians, %.1f %% machine CPU per record; one poll %.1f ms median (%.1f–%.1f, %d polls)\n",
		res.RateCostPct, res.CPUCostPct, res.PollMS.Median, res.PollMS.Min, res.PollMS.Max, res.Polls)
	fmt.Fprintf(out, "the console's PostgreSQL backends used %.1f %% of the drain's machine CPU (median; %.1f–%.1f)\n",
		res.ConsoleDBCPUPct.Median, res.ConsoleDBCPUPct.Min, res.ConsoleDBCPUPct.Max)
	return res, nil
}

// consolePoller serves a read-only console on the drain's schema in this
// process (its own pool of up to 4 connections) and requests the pages'
// calls every interval, as an open browser tab does, from the moment the
// preload commits until the drain ends.
type consolePoller struct {
	o       options
	took    []float64          // each poll's duration, ms
	callMax map[string]float64 // each call's slowest answer, ms
	pool    *pgxpool.Pool
	srv     *httptest.Server
	cancel  context.CancelFunc
	begun   chan struct{}
	wg      sync.WaitGroup
	err     error
	pidsMu  sync.Mutex
	pids    []int         // the console pool's backends
	cpu0    time.Duration // their CPU time at begin
	dbCPU   time.Duration // their CPU time from begin to stop
}

func (p *consolePoller) prepare(ctx context.Context, cfg engine.Config) error {
	p.callMax = map[string]float64{}
	pcfg, err := pgxpool.ParseConfig(p.o.databaseURL)
	if err != nil {
		return err
	}
	pcfg.MaxConns = 4
	pcfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		p.pidsMu.Lock()
		defer p.pidsMu.Unlock()
		p.pids = append(p.pids, int(c.PgConn().PID()))
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	con, err := console.New(pool, console.Config{Schema: cfg.Schema, ReadOnly: true})
	if err != nil {
		pool.Close()
		return err
	}
	// Connect the pool's 4 connections now, as a console that has been
	// open a while has: their start-up is not the console's polling cost.
	var conns []*pgxpool.Conn
	for range 4 {
		c, err := pool.Acquire(ctx)
		if err != nil {
			pool.Close()
			return err
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	p.pool, p.srv, p.begun = pool, httptest.NewServer(con), make(chan struct{})
	// stop ends the polling between polls: a poll under way when the
	// drain ends is finished (and its CPU counted), so every drain gets at
	// least the poll at its start. reqCtx ends the requests only if the
	// whole run is cancelled.
	reqCtx := ctx
	ctx, p.cancel = context.WithCancel(ctx)
	p.wg.Go(func() {
		select {
		case <-ctx.Done():
			return
		case <-p.begun:
		}
		tick := time.NewTicker(p.o.consoleInterval)
		defer tick.Stop()
		for {
			t0 := time.Now()
			for _, path := range consolePolls {
				c0 := time.Now()
				if err := getOK(reqCtx, p.srv.Client(), p.srv.URL+path); err != nil {
					if reqCtx.Err() == nil {
						p.err = err
					}
					return
				}
				p.callMax[path] = max(p.callMax[path], float64(time.Since(c0).Microseconds())/1000)
			}
			p.took = append(p.took, float64(time.Since(t0).Microseconds())/1000)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return nil
}

func (p *consolePoller) begin() {
	p.pidsMu.Lock()
	for _, pid := range p.pids {
		p.cpu0 += processCPU(pid)
	}
	p.pidsMu.Unlock()
	close(p.begun)
}

func (p *consolePoller) stop() error {
	p.cancel()
	p.wg.Wait()
	p.srv.Close()
	p.pidsMu.Lock()
	for _, pid := range p.pids {
		p.dbCPU += processCPU(pid)
	}
	p.dbCPU -= p.cpu0
	p.pidsMu.Unlock()
	p.pool.Close()
	return p.err
}

// processCPU is a process's user and system CPU time so far (0 if it is
// gone or /proc is not readable: PostgreSQL on another machine).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

func getOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New("console " + url + ": " + resp.Status + ": " + string(body))
	}
	return nil
}
