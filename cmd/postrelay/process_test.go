package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

// relay is one `postrelay run` process.
type relay struct {
	id     string
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited is closed
}

func (r *relay) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stderr.Write(p)
}

func (r *relay) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stderr.String()
}

// cluster is a schema, a broker topic table and the relay processes on it.
type cluster struct {
	t      *testing.T
	pool   *pgxpool.Pool
	cfg    engine.Config
	topic  string
	args   []string
	relays []*relay
	// poison, if set, marks the records the writer gives a payload that is
	// not JSON (which a broker with a JSON payload column refuses); writer
	// i's batch has records j = 0, 1, 2.
	poison func(i, j int) bool
}

// poisonPayload is not a JSON document.
const poisonPayload = `{"poison":`

const (
	procLeaseTTL  = 2 * time.Second
	procHeartbeat = 200 * time.Millisecond
)

func newCluster(t *testing.T, extra ...string) *cluster {
	t.Helper()
	pool, schema := pgtest.FreshSchema(t)
	cfg := engine.Config{Schema: schema, Partitions: 16}
	require.NoError(t, engine.Migrate(context.Background(), pool, cfg))
	var b [4]byte
	_, _ = rand.Read(b[:])
	topic := "proc_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_" + topic}.Sanitize())
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_offsets_" + topic}.Sanitize())
	})
	args := append([]string{"run",
		"--database-url", pgtest.URL(), "--schema", schema, "--broker", pgtest.URL(),
		"--lease-ttl", procLeaseTTL.String(), "--heartbeat-interval", procHeartbeat.String(),
		"--poll-interval", "200ms", "--retry-initial", "50ms", "--retry-max", "500ms", "--log-level", "info",
	}, extra...)
	return &cluster{t: t, pool: pool, cfg: cfg, topic: topic, args: args}
}

func (c *cluster) start(id string) *relay {
	c.t.Helper()
	r := &relay{id: id, exited: make(chan struct{})}
	r.cmd = exec.Command(binary, append(c.args, "--instance-id", id)...)
	r.cmd.Stderr = r
	r.cmd.Stdout = io.Discard
	require.NoError(c.t, r.cmd.Start())
	go func() {
		r.err = r.cmd.Wait()
		close(r.exited)
	}()
	c.relays = append(c.relays, r)
	c.t.Cleanup(func() {
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
		_ = r.cmd.Process.Kill()
		<-r.exited
		if c.t.Failed() {
			c.t.Logf("relay %s log:\n%s", r.id, r.log())
		}
	})
	return r
}

// stop sends SIGTERM and requires a clean exit.
func (c *cluster) stop(r *relay) {
	c.t.Helper()
	require.NoError(c.t, r.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-r.exited:
		require.NoError(c.t, r.err, "relay %s exit; log:\n%s", r.id, r.log())
	case <-time.After(30 * time.Second):
		c.t.Fatalf("relay %s did not stop on SIGTERM", r.id)
	}
}

// owners returns partition → owner with an unexpired lease.
func (c *cluster) owners() map[int]string {
	c.t.Helper()
	rows, err := c.pool.Query(context.Background(), "SELECT partition, owner FROM "+
		pgx.Identifier{c.cfg.Schema, "partitions"}.Sanitize()+" WHERE owner IS NOT NULL AND lease_until > now()")
	require.NoError(c.t, err)
	m := map[int]string{}
	var p int
	var o string
	_, err = pgx.ForEachRow(rows, []any{&p, &o}, func() error { m[p] = o; return nil })
	require.NoError(c.t, err)
	return m
}

// waitSettled waits until no partition has changed owner for quiet (20 s
// at most).
func (c *cluster) waitSettled(quiet time.Duration) {
	c.t.Helper()
	var last map[int]string
	var since time.Time
	waitFor(c.t, 20*time.Second, fmt.Sprintf("no partition changes owner for %v", quiet), func() bool {
		o := c.owners()
		if !maps.Equal(o, last) {
			last, since = o, time.Now()
		}
		return time.Since(since) >= quiet
	})
}

// delivery is one message found in the broker's topic table.
type delivery struct {
	uuid     string
	key      string
	recordID int64
}

// deliveries reads the broker side: watermill-sql's topic table in offset
// (publish) order.
func (c *cluster) deliveries() []delivery {
	c.t.Helper()
	rows, err := c.pool.Query(context.Background(), `SELECT uuid, metadata->>'postrelay_key', (metadata->>'postrelay_record_id')::bigint FROM `+
		pgx.Identifier{"watermill_" + c.topic}.Sanitize()+` ORDER BY "offset"`)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil
		}
		require.NoError(c.t, err)
	}
	var out []delivery
	var d delivery
	_, err = pgx.ForEachRow(rows, []any{&d.uuid, &d.key, &d.recordID}, func() error { out = append(out, d); return nil })
	require.NoError(c.t, err)
	return out
}

// writer writes records in transactions (every fifth rolled back) until
// stopped, and reports the committed and rolled-back message ids; committed
// poison records (cluster.poison) are in poison, not committed.
type writer struct {
	mu         sync.Mutex
	committed  map[string]bool
	rolledBack map[string]bool
	poison     map[string]bool
	cancel     context.CancelFunc
	done       chan struct{}
}

func (c *cluster) startWriter(keys int, pause time.Duration) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{committed: map[string]bool{}, rolledBack: map[string]bool{}, poison: map[string]bool{}, cancel: cancel, done: make(chan struct{})}
	ew := engine.NewWriter(c.cfg)
	go func() {
		defer close(w.done)
		tick := time.NewTicker(pause)
		defer tick.Stop()
		for i := 0; ctx.Err() == nil; i++ {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
			ids := make([]string, 3)
			recs := make([]engine.Record, 3)
			poison := make([]bool, 3)
			for j := range recs {
				ids[j] = fmt.Sprintf("m-%p-%d-%d", w, i, j)
				recs[j] = engine.Record{Topic: c.topic, Key: fmt.Sprintf("k%d", (i*3+j)%keys),
					Payload: fmt.Appendf(nil, `{"i":%d}`, i), MessageID: ids[j]}
				if c.poison != nil && c.poison(i, j) {
					poison[j] = true
					recs[j].Payload = []byte(poisonPayload)
				}
			}
			commit := i%5 != 4
			tx, err := c.pool.Begin(ctx)
			if err != nil {
				continue // the database may be restarting: try again
			}
			if err := ew.Write(ctx, tx, recs...); err != nil {
				_ = tx.Rollback(context.Background())
				continue
			}
			if commit {
				err = tx.Commit(ctx)
			} else {
				err = tx.Rollback(ctx)
			}
			if err != nil {
				// A failed COMMIT may or may not have committed: count the
				// records as neither committed nor rolled back.
				continue
			}
			w.mu.Lock()
			for j, id := range ids {
				if commit && poison[j] {
					w.poison[id] = true
				} else if commit {
					w.committed[id] = true
				} else {
					w.rolledBack[id] = true
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) stop() {
	w.cancel()
	<-w.done
}

// verify waits until every committed record is on the broker, then checks
// no rolled-back (or poison) record is, and per-key order of first
// deliveries. It returns the number of distinct records delivered and of
// duplicates.
func (c *cluster) verify(w *writer, timeout time.Duration) (delivered, dups int) {
	c.t.Helper()
	return verifyDeliveries(c.t, w, timeout, c.deliveries, c.whereabouts)
}

// whereabouts says where each record with one of these message ids is in
// the cluster's outbox (pending, held, dead-lettered or absent).
func (c *cluster) whereabouts(ids []string) string {
	return recorder.Whereabouts(context.Background(), c.pool, c.cfg.Schema, ids)
}

// verifyDeliveries is verify for any broker: read returns the broker side's
// deliveries so far, in delivery order; locate says where the records that
// never arrived are (recorder.Whereabouts).
func verifyDeliveries(t *testing.T, w *writer, timeout time.Duration, read func() []delivery, locate func(ids []string) string) (delivered, dups int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	deadline := time.Now().Add(timeout)
	var ds []delivery
	for {
		ds = read()
		seen := map[string]bool{}
		for _, d := range ds {
			seen[d.uuid] = true
		}
		var missing []string
		for id := range w.committed {
			if !seen[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d committed records never delivered within %v; %s", len(missing), len(w.committed), timeout, locate(missing))
		}
		<-time.After(100 * time.Millisecond) // poll the broker side again
	}
	first := map[string]bool{}
	last := map[string]int64{}
	for _, d := range ds {
		require.False(t, w.rolledBack[d.uuid], "rolled-back record %s delivered", d.uuid)
		require.False(t, w.poison[d.uuid], "poison record %s delivered", d.uuid)
		if first[d.uuid] {
			dups++
			continue
		}
		first[d.uuid] = true
		require.GreaterOrEqual(t, d.recordID, last[d.key], "key %s: record %d first delivered after %d", d.key, d.recordID, last[d.key])
		last[d.key] = d.recordID
	}
	return len(first), dups
}

// unique counts the distinct records on the broker side.
func (c *cluster) unique() int {
	seen := map[string]bool{}
	for _, d := range c.deliveries() {
		seen[d.uuid] = true
	}
	return len(seen)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		<-tick.C
	}
	return time.Since(start)
}

// Three relay processes; one is killed with SIGKILL mid-run and another
// started: nothing is lost, order per key holds, and the dead one's
// partitions are taken over within the lease TTL plus one heartbeat.
func TestProcessesSurviveKill9(t *testing.T) {
	t.Parallel()
	testProcessesSurviveKill9(t, "sigkill_takeover", 0)
}

// testProcessesSurviveKill9 is TestProcessesSurviveKill9 with the relays
// given extra flags (another --database-url, say); name is its
// FAULT-SUMMARY name, and slackTicks heartbeats more are allowed for the
// takeover.
func testProcessesSurviveKill9(t *testing.T, name string, slackTicks int, extra ...string) {
	c := newCluster(t, extra...)
	w := c.startWriter(40, 5*time.Millisecond)
	r1, _, _ := c.start("p1"), c.start("p2"), c.start("p3")
	waitFor(t, 20*time.Second, "three relays share the partitions", func() bool {
		o := c.owners()
		n := map[string]int{}
		for _, v := range o {
			n[v]++
		}
		return len(o) == 16 && n["p1"] > 0 && n["p2"] > 0 && n["p3"] > 0
	})
	waitFor(t, 20*time.Second, "deliveries flow", func() bool { return len(c.deliveries()) > 200 })
	// Kill a relay at steady state, not while the third one's arrival is
	// still moving partitions: an actor stopped by a rebalance can leave a
	// cancel request in flight, and a process killed then crashes
	// PgBouncer 1.18 (pgbouncer/pgbouncer#801), which the PgBouncer variant
	// of this test runs through.
	c.waitSettled(3 * procHeartbeat)

	var victim []int
	for p, o := range c.owners() {
		if o == "p1" {
			victim = append(victim, p)
		}
	}
	require.NoError(t, r1.cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	<-r1.exited
	c.start("p4")
	took := waitFor(t, 20*time.Second, "takeover of the killed relay's partitions", func() bool {
		o := c.owners()
		for _, p := range victim {
			if o[p] == "" || o[p] == "p1" {
				return false
			}
		}
		return true
	})
	took = time.Since(killed)
	t.Logf("takeover of %d partitions after SIGKILL: %v (lease TTL %v, heartbeat %v)", len(victim), took, procLeaseTTL, procHeartbeat)
	// TTL plus one tick, with slack for the poll above and for ticks that
	// run late: alone the takeover takes 2.0-2.2 s here, but with the other
	// packages' tests running beside it (CI) one run took 2.87 s.
	require.LessOrEqual(t, took, procLeaseTTL+time.Duration(5+slackTicks)*procHeartbeat)

	waitFor(t, 20*time.Second, "more deliveries after takeover", func() bool { return len(c.deliveries()) > 600 })
	w.stop()
	delivered, dups := c.verify(w, 60*time.Second)
	t.Logf("kill -9: %d committed records delivered, %d rolled back never delivered, %d duplicates", delivered, len(w.rolledBack), dups)
	faultSummary{name: name, records: len(w.committed), rolledBack: len(w.rolledBack), faults: "sigkill:1",
		duplicates: dups, recovery: "takeover=" + took.Round(10*time.Millisecond).String(),
		note: fmt.Sprintf("3 relays, 1 SIGKILLed; lease TTL %v, heartbeat %v", procLeaseTTL, procHeartbeat)}.log(t)
	for _, r := range c.relays[1:] {
		c.stop(r)
	}
}

// A relay frozen with SIGSTOP past its lease cannot commit progress after it
// resumes: its completions are fenced off and it logs the lost leases.
func TestFrozenRelayIsFencedAfterResume(t *testing.T) {
	t.Parallel()
	testFrozenRelayIsFenced(t, "sigstop_fencing")
}

// testFrozenRelayIsFenced is TestFrozenRelayIsFencedAfterResume with the
// relays given extra flags; name is its FAULT-SUMMARY name.
func testFrozenRelayIsFenced(t *testing.T, name string, extra ...string) {
	c := newCluster(t, append([]string{"--publish-delay", "20ms", "--batch-size", "20"}, extra...)...)
	w := c.startWriter(40, 2*time.Millisecond)
	r1 := c.start("s1")
	waitFor(t, 20*time.Second, "s1 owns every partition", func() bool { return len(c.owners()) == 16 })
	r2 := c.start("s2")
	waitFor(t, 20*time.Second, "s2 joins", func() bool {
		n := 0
		for _, o := range c.owners() {
			if o == "s2" {
				n++
			}
		}
		return n > 0
	})
	waitFor(t, 20*time.Second, "deliveries flow", func() bool { return len(c.deliveries()) > 100 })

	require.NoError(t, r1.cmd.Process.Signal(syscall.SIGSTOP))
	took := waitFor(t, 20*time.Second, "s2 takes every partition of the frozen s1", func() bool {
		o := c.owners()
		if len(o) != 16 {
			return false
		}
		for _, v := range o {
			if v != "s2" {
				return false
			}
		}
		return true
	})
	require.NoError(t, r1.cmd.Process.Signal(syscall.SIGCONT))
	waitFor(t, 20*time.Second, "s1 notices its leases are gone", func() bool {
		return strings.Contains(r1.log(), "lease lost")
	})
	w.stop()
	delivered, dups := c.verify(w, 60*time.Second)
	t.Logf("SIGSTOP: %d committed records delivered, %d duplicates", delivered, dups)
	faultSummary{name: name, records: len(w.committed), rolledBack: len(w.rolledBack), faults: "sigstop:1",
		duplicates: dups, recovery: "takeover=" + took.Round(10*time.Millisecond).String(),
		note: "a relay frozen past its lease is fenced after SIGCONT (logs lease lost)"}.log(t)
	c.stop(r1)
	c.stop(r2)
	require.NotContains(t, r1.log(), "level=ERROR")
}
