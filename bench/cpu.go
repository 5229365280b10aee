package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// machineCPU is the machine's busy CPU time (all cores, every process:
// relays, PostgreSQL, this program) from /proc/stat. The difference of two
// readings divided by the records moved is the CPU a record cost, which
// varies much less on a shared machine than a rate does.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuPerRecordUS is the machine CPU time per record in microseconds.
func cpuPerRecordUS(busy time.Duration, records int) float64 {
	if records == 0 || busy <= 0 {
		return 0
	}
	return float64(busy.Microseconds()) / float64(records)
}

// benchAppName is the application_name every connection of this benchmark
// process carries (set on the URLs in run), so that its PostgreSQL
// backends can be told from those of anything else running.
var benchAppName = fmt.Sprintf("postrelay-bench-%d", os.Getpid())

// withAppName returns url with application_name set to benchAppName,
// unless it names one already.
func withAppName(url string) string {
	if url == "" || strings.Contains(url, "application_name") {
		return url
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "application_name=" + benchAppName
}

// ownCPU measures the CPU of this process (producers and the in-process
// relay or peer) and of the PostgreSQL backends serving its connections:
// unlike machineCPU it does not count other work running on a shared
// machine. PostgreSQL's own background processes (WAL writer,
// checkpointer) are not counted, nor relay processes started apart.
type ownCPU struct {
	pool     *pgxpool.Pool
	self     time.Duration
	backends map[int]time.Duration
}

// startOwnCPU takes the first reading; pool is any pool of this process.
func startOwnCPU(ctx context.Context, pool *pgxpool.Pool) *ownCPU {
	m := &ownCPU{pool: pool, self: selfCPU()}
	m.backends = backendCPU(ctx, pool)
	return m
}

// since returns the CPU used since the first reading: in all, and of that
// in this process.
func (m *ownCPU) since(ctx context.Context) (all, self time.Duration) {
	if m == nil {
		return 0, 0
	}
	self = selfCPU() - m.self
	all = self
	for pid, t := range backendCPU(ctx, m.pool) {
		all += t - m.backends[pid] // a backend started since counts from 0
	}
	return all, self
}

// selfCPU is this process's user and system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backendCPU is the CPU time of each PostgreSQL backend whose
// application_name is benchAppName, read from /proc (PostgreSQL on this
// machine).
func backendCPU(ctx context.Context, pool *pgxpool.Pool) map[int]time.Duration {
	out := map[int]time.Duration{}
	rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, benchAppName)
	if err != nil {
		return out
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return out
	}
	for _, pid := range pids {
		out[int(pid)] = procCPU(int(pid))
	}
	return out
}

// procCPU is the user and system CPU time of process pid, read from /proc
// (0 if it is gone).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): state is the
	// first, utime the 12th, stime the 13th.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * time.Second / clockTicks
}

// postgresCPU is the CPU time of every process named postgres on this
// machine (each PostgreSQL backend and background process), by pid.
func postgresCPU() map[int]time.Duration {
	out := map[int]time.Duration{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		out[pid] = procCPU(pid)
	}
	return out
}

// cpuSplit divides a drain's machine CPU between the relay processes,
// PostgreSQL's processes and everything else (this program included).
type cpuSplit struct {
	relayPIDs []int
	relay     time.Duration
	postgres  map[int]time.Duration
}

func startCPUSplit(relayPIDs []int) *cpuSplit {
	s := &cpuSplit{relayPIDs: relayPIDs, postgres: postgresCPU()}
	for _, pid := range relayPIDs {
		s.relay += procCPU(pid)
	}
	return s
}

// since returns the relays' and PostgreSQL's CPU since the first reading.
func (s *cpuSplit) since() (relay, postgres time.Duration) {
	for _, pid := range s.relayPIDs {
		relay += procCPU(pid)
	}
	relay -= s.relay
	for pid, t := range postgresCPU() {
		postgres += t - s.postgres[pid] // a process started since counts from 0
	}
	return relay, postgres
}

// walStats is a reading of pg_stat_wal: what the cluster wrote to its
// write-ahead log (every client's, and the background processes'), to lay
// beside a system's commits: WAL its relay writes is WAL the producers'
// synchronous COMMITs wait to be flushed with theirs.
type walStats struct {
	records, fpi, bytes, syncs int64
}

func readWAL(ctx context.Context, pool *pgxpool.Pool) (walStats, error) {
	var w walStats
	err := pool.QueryRow(ctx, `SELECT wal_records, wal_fpi, wal_bytes::bigint, wal_sync FROM pg_stat_wal`).
		Scan(&w.records, &w.fpi, &w.bytes, &w.syncs)
	if err != nil {
		return w, fmt.Errorf("read pg_stat_wal: %w", err)
	}
	return w, nil
}

func (w walStats) sub(o walStats) walStats {
	return walStats{w.records - o.records, w.fpi - o.fpi, w.bytes - o.bytes, w.syncs - o.syncs}
}

// waitSampler samples, every millisecond, what this benchmark's backends
// that are running COMMIT wait on (pg_stat_activity's wait_event_type and
// wait_event; "CPU" when they wait on nothing): a diagnosis of where a
// system's producers' commits spend their time (BENCH_WAIT_SAMPLE=1; any
// other value is a LIKE pattern of the lower-cased statements to sample
// instead, e.g. '%probe as materialized%' for the tail poll). The
// sampler's own queries load every system alike.
type waitSampler struct {
	counts map[string]int // written by the sampling goroutine only, read after done
	err    error          // the query error that ended the sampling early, if any
	stop   context.CancelFunc
	done   chan struct{}
}

func startWaitSampler(ctx context.Context, pool *pgxpool.Pool, like string) *waitSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &waitSampler{counts: map[string]int{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rows, err := pool.Query(ctx, `SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity
				WHERE application_name = $1 AND state = 'active' AND lower(query) LIKE $2`, benchAppName, like)
			if err == nil {
				for rows.Next() {
					var w string
					if err = rows.Scan(&w); err != nil {
						break
					}
					s.counts[w]++
				}
				rows.Close()
				if err == nil {
					err = rows.Err()
				}
			}
			if err != nil {
				if ctx.Err() == nil {
					s.err = err
				}
				return
			}
		}
	}()
	return s
}

// end stops the sampler and returns its counts as text, most frequent
// first. It may be called more than once.
func (s *waitSampler) end() string {
	if s == nil {
		return ""
	}
	s.stop()
	<-s.done
	type kv struct {
		k string
		n int
	}
	var all []kv
	total := 0
	for k, n := range s.counts {
		all = append(all, kv{k, n})
		total += n
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	var b strings.Builder
	fmt.Fprintf(&b, "wait samples %d:", total)
	for _, e := range all {
		fmt.Fprintf(&b, " %s %d", e.k, e.n)
	}
	if s.err != nil {
		fmt.Fprintf(&b, " (sampling stopped early: %v)", s.err)
	}
	return b.String()
}
