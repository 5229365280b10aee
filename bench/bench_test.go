package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// The benchmark program runs its scenarios end to end on small workloads
// against the real PostgreSQL: every preloaded record is drained (the drain
// ends only when the table is empty) by relay processes and by the
// forwarder, the latency run pairs every committed record with its publish,
// and --json prints one object as the last line. Figures are not asserted:
// they live in bench/README.md.
func TestScenariosRunEndToEnd(t *testing.T) {
	pgtest.Pool(t) // fails with a hint if PostgreSQL is down
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var out, errOut bytes.Buffer
	err := run(ctx, []string{"drain", "--database-url", pgtest.URL(), "--records", "3000", "--keys", "50",
		"--instances", "2", "--baseline", "watermill-forwarder", "--json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var d DrainResult
	require.NoError(t, json.Unmarshal(lastLine(out.String()), &d), out.String())
	require.Equal(t, 3000, d.Records)
	require.Equal(t, 2, d.Instances)
	require.Positive(t, d.RecordsPerSec)
	require.Positive(t, d.PeakRSSMB)
	require.Positive(t, d.BaselineRecPerSec)
	require.InDelta(t, d.RecordsPerSec/d.BaselineRecPerSec, d.Ratio, 1e-9)

	out.Reset()
	err = run(ctx, []string{"latency", "--database-url", pgtest.URL(), "--rate", "200", "--duration", "1s", "--warmup", "0s",
		"--baseline", "watermill-forwarder", "--json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var l LatencyResult
	require.NoError(t, json.Unmarshal(lastLine(out.String()), &l), out.String())
	require.Positive(t, l.Samples)
	require.LessOrEqual(t, l.P50MS, l.P99MS)
	require.LessOrEqual(t, l.P99MS, l.MaxMS)
	require.Positive(t, l.CPUPerRecordUS)
	require.Equal(t, sysForwarder, l.Baseline)
	require.Positive(t, l.BaselineP99MS)
	require.NotNil(t, l.Catalogs)
	require.Equal(t, []string{sysPostrelay, sysForwarder, sysPlain}, systemsOf(l.Systems))
	for _, r := range l.Runs {
		require.Positive(t, r.CommitP99MS, r.System)
		// Every system's transactions write WAL, and its producers allocate.
		require.Positive(t, r.WALBytesPerRecord, r.System)
		require.Positive(t, r.WALRecordsPerRecord, r.System)
		require.Positive(t, r.AllocBytesPerRecord, r.System)
		if r.System != sysPlain {
			// Every committed record was published (waitPublished fails otherwise).
			require.Positive(t, r.Samples, r.System)
			require.LessOrEqual(t, r.FromCommitP50MS, r.P50MS, r.System)
			require.LessOrEqual(t, r.AfterCommitP50MS, r.FromCommitP50MS, r.System)
			require.Positive(t, r.AfterCommitP99MS, r.System)
		}
	}
	plain := l.Systems[2]
	require.InDelta(t, l.Systems[0].CommitP99MS.Median/plain.CommitP99MS.Median, l.Systems[0].CommitP99VsPlain, 1e-9)
}

// The River baseline runs end to end on a small workload: about 200 records
// through River's client as an outbox (its worker publishes each job), in
// the latency scenario (two alternated rounds, with postrelay) and in a
// drain. Every committed job must be published, or the run fails.
func TestRiverBaselineRunsEndToEnd(t *testing.T) {
	t.Parallel()
	pgtest.Pool(t) // fails with a hint if PostgreSQL is down
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var out, errOut bytes.Buffer
	err := run(ctx, []string{"latency", "--database-url", pgtest.URL(), "--rate", "100", "--duration", "1s", "--warmup", "0s",
		"--rounds", "2", "--baseline", "river", "--commit-reference=false", "--json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var l LatencyResult
	require.NoError(t, json.Unmarshal(lastLine(out.String()), &l), out.String())
	require.Equal(t, []string{sysPostrelay, sysRiver}, systemsOf(l.Systems))
	require.Equal(t, []string{sysPostrelay, sysRiver, sysPostrelay, sysRiver}, systemsOfRuns(l.Runs), "rounds alternate the systems")
	require.NotNil(t, l.River)
	require.Equal(t, 2000, l.River.MaxWorkers)
	river := l.Systems[1]
	require.Equal(t, 2, river.Rounds)
	require.Positive(t, river.P99MS.Median)
	require.LessOrEqual(t, river.P99MS.Min, river.P99MS.Median)
	require.LessOrEqual(t, river.P99MS.Median, river.P99MS.Max)
	require.Positive(t, river.CPUPerRecordUS.Median)
	for _, r := range l.Runs {
		require.Positive(t, r.Samples, r.System)
	}

	out.Reset()
	err = run(ctx, []string{"drain", "--database-url", pgtest.URL(), "--records", "200", "--keys", "20",
		"--baseline", "river", "--json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var d DrainResult
	require.NoError(t, json.Unmarshal(lastLine(out.String()), &d), out.String())
	require.Len(t, d.Baselines, 1)
	require.Equal(t, sysRiver, d.Baselines[0].System)
	require.Equal(t, 200, d.Baselines[0].Records)
	require.Positive(t, d.Baselines[0].RecordsPerSec)
	require.Empty(t, d.Baseline, "the forwarder's fields stay empty without it")
}

// The console scenario drains a small outbox with and without a console
// polling it (every 50 ms here), alternated, and reports both.
func TestConsoleScenarioRunsEndToEnd(t *testing.T) {
	pgtest.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"console", "--database-url", pgtest.URL(), "--records", "10000", "--keys", "50",
		"--rounds", "2", "--console-interval", "50ms", "--json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var c ConsoleResult
	require.NoError(t, json.Unmarshal(lastLine(out.String()), &c), out.String())
	require.Len(t, c.Runs, 4)
	require.Equal(t, []bool{false, true, true, false}, []bool{c.Runs[0].Console, c.Runs[1].Console, c.Runs[2].Console, c.Runs[3].Console})
	require.Positive(t, c.Without.Median)
	require.Positive(t, c.With.Median)
	require.Positive(t, c.Polls, "the console polled during the drains")
	require.Contains(t, out.String(), "cost of the console")
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	bs, err := parseBaselines("river, watermill-forwarder,river")
	require.NoError(t, err)
	require.Equal(t, []string{sysRiver, sysForwarder}, bs)
	bs, err = parseBaselines("postrelay-retention")
	require.NoError(t, err)
	require.Equal(t, []string{sysRetention}, bs)
	_, err = parseBaselines("river,sidekiq")
	require.ErrorContains(t, err, `unknown system "sidekiq"`)
	rs, err := parseRates("1000,3000")
	require.NoError(t, err)
	require.Equal(t, []int{1000, 3000}, rs)
	_, err = parseRates("1000,0")
	require.ErrorContains(t, err, `"0" is not a positive number`)
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	runs := []SystemRun{
		{System: sysPostrelay, P99MS: 30, CommitP50MS: 1, CommitP99MS: 12},
		{System: sysPlain, CommitP50MS: 1, CommitP99MS: 10},
		{System: sysPostrelay, P99MS: 10, CommitP50MS: 2, CommitP99MS: 11},
		{System: sysPlain, CommitP50MS: 1, CommitP99MS: 10},
		{System: sysPostrelay, P99MS: 20, CommitP50MS: 3, CommitP99MS: 13},
		{System: sysPlain, CommitP50MS: 1, CommitP99MS: 10},
	}
	ss := summarize([]string{sysPostrelay, sysRiver, sysPlain}, runs)
	require.Equal(t, []string{sysPostrelay, sysPlain}, systemsOf(ss), "a system without runs is left out")
	require.Equal(t, Spread{Median: 20, Min: 10, Max: 30}, ss[0].P99MS)
	require.Equal(t, 3, ss[0].Rounds)
	require.InDelta(t, 1.2, ss[0].CommitP99VsPlain, 1e-9)
	require.InDelta(t, 2.0, ss[0].CommitP50VsPlain, 1e-9)
	require.Zero(t, ss[1].CommitP99VsPlain)
}

func systemsOf(ss []SystemSummary) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.System)
	}
	return out
}

func systemsOfRuns(rs []SystemRun) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.System)
	}
	return out
}

func lastLine(s string) []byte {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return []byte(lines[len(lines)-1])
}

func TestMedian(t *testing.T) {
	t.Parallel()
	require.Zero(t, median(nil))
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	in := []float64{3, 1, 2}
	median(in)
	require.Equal(t, []float64{3, 1, 2}, in, "median sorted its input")
}

func TestCPUPerRecord(t *testing.T) {
	t.Parallel()
	require.Equal(t, 12.5, cpuPerRecordUS(25*time.Millisecond, 2000))
	require.Zero(t, cpuPerRecordUS(time.Second, 0))
	a := machineCPU()
	require.Positive(t, a, "/proc/stat unreadable")
	require.GreaterOrEqual(t, machineCPU(), a)
}

// The report renders a run with River and the forwarder: the steady-load
// table per rate (spreads shown), the COMMIT cost table, and a run from
// before the River baseline (no Systems) still renders.
func TestResultsMarkdown(t *testing.T) {
	t.Parallel()
	runs := []SystemRun{
		{System: sysPostrelay, AchievedRate: 1000, P50MS: 4, P99MS: 20, MaxMS: 50, AfterCommitP50MS: 1.5, AfterCommitP99MS: 5, CommitP50MS: 1, CommitP99MS: 11, CPUPerRecordUS: 900},
		{System: sysRiver, AchievedRate: 990, P50MS: 5, P99MS: 40, MaxMS: 90, CommitP50MS: 1.2, CommitP99MS: 15, CPUPerRecordUS: 1300},
		{System: sysForwarder, AchievedRate: 1000, P50MS: 3, P99MS: 18, MaxMS: 40, CommitP50MS: 1.1, CommitP99MS: 12, CPUPerRecordUS: 1100},
		{System: sysPlain, AchievedRate: 1000, CommitP50MS: 1, CommitP99MS: 10, CPUPerRecordUS: 700},
		{System: sysPostrelay, AchievedRate: 1000, P50MS: 6, P99MS: 30, MaxMS: 70, AfterCommitP50MS: 2.5, AfterCommitP99MS: 7, CommitP50MS: 1, CommitP99MS: 12, CPUPerRecordUS: 950},
	}
	systems := []string{sysPostrelay, sysRiver, sysForwarder, sysPlain}
	lat := &LatencyResult{TargetRate: 1000, Rounds: 2, DurationSec: 10, WarmupSec: 2, P99MS: 25, Systems: summarize(systems, runs), Runs: runs}
	old := &LatencyResult{TargetRate: 5000, P99MS: 60, Baseline: sysForwarder, BaselineP99MS: 40, P99Ratio: 40.0 / 60}
	d := &DrainResult{Records: 100, RecordsPerSec: 1000}
	d.addBaseline(BaselineDrain{System: sysRiver, Records: 100, RecordsPerSec: 200, Ratio: 5})
	// A drain run in rounds (as bench all runs it) reports its medians.
	rounds := &DrainResult{Records: 300, Keys: 10, RecordsPerSec: 1, Rounds: make([][]BaselineDrain, 3), Medians: []DrainMedian{
		{System: "postrelay", RecordsPerSec: 100000, MinRecordsPerSec: 90000, MaxRecordsPerSec: 110000, CPUPerRecordUS: 16},
		{System: sysRiver, RecordsPerSec: 20000, MinRecordsPerSec: 19000, MaxRecordsPerSec: 21000, CPUPerRecordUS: 110},
		{System: sysForwarder, RecordsPerSec: 1500, MinRecordsPerSec: 1400, MaxRecordsPerSec: 1600, CPUPerRecordUS: 600},
	}}
	r := &AllResult{
		Date: "2026-12-01", Machine: "test", Baselines: []string{sysRiver, sysForwarder},
		River:    &riverConfig{MaxWorkers: 2000, FetchCooldown: 2 * time.Millisecond, FetchPollInterval: 20 * time.Millisecond},
		Catalogs: &CatalogReport{Autovacuum: "off", Before: []CatalogStat{{Name: "pg_class", SizeMB: 2, LiveRows: 400, DeadRows: 5000}}},
		Drain:    rounds, DrainDelay: d, DrainMillion: d, DrainTracing: d,
		Latency1000: lat, Latency5000: old, Scale: &ScaleResult{},
		Write: &WriteResult{CommitCost: []CommitCostAt{{Rate: 1000, Rounds: 2, Systems: summarize(systems, runs)}}},
	}
	md := resultsMarkdown(r)
	require.Contains(t, md, "`go run ./bench all --baseline river,watermill-forwarder`")
	require.Contains(t, md, "MaxWorkers 2000, FetchCooldown 2ms, FetchPollInterval 20ms")
	require.Contains(t, md, "pg_class 2.0 MB, 400 live / 5000 dead rows")
	require.Contains(t, md, "| drain 300 records, 10 keys, memory broker, 1 relay, medians of 3 alternated rounds | 100000 rec/s [90000–110000] (16.0 µs")
	require.Contains(t, md, "| 20000 rec/s [19000–21000] (300 records; 110.0 µs machine CPU per record) | 1500 rec/s [1400–1600]")
	require.Contains(t, md, "| 5.0× River, 66.7× the forwarder |")
	require.Contains(t, md, "| 200 rec/s (100 records;")
	require.Contains(t, md, "5.0× River")
	require.Contains(t, md, "| postrelay | 1000 | 5.0 (4.0–6.0) | 25.0 (20.0–30.0) |")
	require.Contains(t, md, "| River | 990 | 5.0 | 40.0 |")
	// The latency from COMMIT's return, where the rounds have it.
	require.Contains(t, md, "| 2.00 (1.50–2.50) / 6.0 (5.0–7.0) |")
	require.Regexp(t, `\| River \| 990 \|[^\n]*\| – \|`, md)
	require.Contains(t, md, "p99 0.62× River's, p99 1.39× the forwarder's")
	require.Contains(t, md, "| 1000 | postrelay | 1000 | 1.00 | 11.5 (11.0–12.0) | 1.00× | 1.15× |")
	require.Contains(t, md, "latency at 5000 rec/s (achieved 0), from just before COMMIT")
}

// The inbox scenario runs end to end on short rounds: every handler
// variant is timed, the duplicates round runs, and the purge deletes the
// 200,000 expired ids with the handler load running (call durations
// before and during it recorded, and the handler sessions' waits
// sampled).
func TestInboxScenarioRunsEndToEnd(t *testing.T) {
	pgtest.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"inbox", "--database-url", pgtest.URL(), "--clients", "2", "--duration", "500ms", "--json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var r InboxResult
	require.NoError(t, json.Unmarshal(lastLine(out.String()), &r), out.String())
	require.Equal(t, 2, r.Clients)
	for name, v := range map[string]float64{"without": r.MsgPerSecWithout, "with": r.MsgPerSecWith, "duplicates": r.DuplicatesPerSec,
		"call without": r.CallUsWithout, "call with": r.CallUsWith, "call claim alone": r.CallUsClaimAlone,
		"during purge": r.MsgPerSecDuringPur, "p99 during purge": r.CallP99UsDuringPurge} {
		require.Positive(t, v, name)
	}
	require.EqualValues(t, 200000, r.PurgedRows)
	require.LessOrEqual(t, r.CallP50UsDuringPurge, r.CallP99UsDuringPurge)
	require.LessOrEqual(t, r.CallP99UsDuringPurge, r.CallMaxUsDuringPurge)
	require.Positive(t, r.WaitsBeforePurge.Samples)
	require.Positive(t, r.WaitsDuringPurge.Samples)
}

// The drain's CPU split reads the relay processes' and PostgreSQL's
// processes' CPU from /proc: this process stands in for a relay.
func TestCPUSplitSeesTheRelayAndPostgreSQL(t *testing.T) {
	pool := pgtest.Pool(t)
	split := startCPUSplit([]int{os.Getpid()})

	// Work in PostgreSQL (a backend) and here (the "relay"), 100 ms or
	// more each: the split must see both.
	var n int64
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM generate_series(1, 5000000)").Scan(&n))
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
		n += int64(len(strconv.Itoa(int(n))))
	}
	relay, postgres := split.since()
	require.Greater(t, relay, 50*time.Millisecond, "this process's CPU")
	require.Greater(t, postgres, 20*time.Millisecond, "the backend that counted")
}
