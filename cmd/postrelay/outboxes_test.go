package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// Three outboxes (three schemas, on two database URLs, each relayed to its
// own topic) served by two `postrelay run --config FILE` processes; one is
// SIGKILLed mid-run: the other takes over every partition of every outbox,
// nothing is lost, order per key holds in each, and the two processes
// together never hold more connections than their budget.
func TestManyOutboxesSurviveKill9(t *testing.T) {
	// Not parallel: two relay processes serving three outboxes (each with a
	// postgres:// broker) hold tens of connections; beside the other process
	// tests it went past PostgreSQL's default max_connections of 100.
	var b [4]byte
	_, _ = rand.Read(b[:])
	app := "many_" + hex.EncodeToString(b[:])
	direct := pgtest.URL() + "&application_name=" + app
	// A second URL for the same server: outboxes on other databases get
	// a pool of their own.
	other := direct + "&connect_timeout=10"
	require.Contains(t, pgtest.URL(), "?", "the test database URL must have query parameters")

	clusters := []*cluster{newCluster(t), newCluster(t), newCluster(t)}
	urls := []string{direct, direct, other}
	var file strings.Builder
	file.WriteString("delivery_conns_total: 6\npool_conns: 3\noutboxes:\n")
	for i, c := range clusters {
		fmt.Fprintf(&file, "  - schema: %s\n    database_url: %q\n    broker: %q\n", c.cfg.Schema, urls[i], pgtest.URL())
	}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	require.NoError(t, os.WriteFile(path, []byte(file.String()), 0o600))
	// Per process: 2 pools × 3 + 6 delivery + 3 LISTEN.
	const budget = 2*3 + 6 + 3

	lead := clusters[0]
	lead.args = []string{"run", "--config", path,
		"--lease-ttl", procLeaseTTL.String(), "--heartbeat-interval", procHeartbeat.String(),
		"--poll-interval", "200ms", "--retry-initial", "50ms", "--retry-max", "500ms", "--log-level", "info"}
	writers := make([]*writer, len(clusters))
	for i, c := range clusters {
		writers[i] = c.startWriter(20, 10*time.Millisecond)
	}
	m1, m2 := lead.start("m1"), lead.start("m2")
	for _, c := range clusters {
		waitFor(t, 30*time.Second, c.cfg.Schema+": both relays hold partitions", func() bool {
			n := map[string]int{}
			for _, o := range c.owners() {
				n[o]++
			}
			return n["m1"] > 0 && n["m2"] > 0 && n["m1"]+n["m2"] == 16
		})
		waitFor(t, 30*time.Second, c.cfg.Schema+": deliveries flow", func() bool { return c.unique() > 100 })
	}
	var used int
	require.NoError(t, lead.pool.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&used))
	t.Logf("connections of the two relays: %d (budget %d each)", used, budget)
	require.LessOrEqual(t, used, 2*budget)
	require.Contains(t, m1.log(), fmt.Sprintf("connection_budget=%d", budget))

	require.NoError(t, m1.cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	<-m1.exited
	for _, c := range clusters {
		waitFor(t, 20*time.Second, c.cfg.Schema+": m2 takes every partition", func() bool {
			o := c.owners()
			if len(o) != 16 {
				return false
			}
			for _, v := range o {
				if v != "m2" {
					return false
				}
			}
			return true
		})
	}
	took := time.Since(killed)
	t.Logf("takeover of the killed relay's partitions in all 3 outboxes: %v (lease TTL %v)", took.Round(time.Millisecond), procLeaseTTL)
	for i, c := range clusters {
		at := c.unique()
		waitFor(t, 20*time.Second, c.cfg.Schema+": deliveries continue", func() bool { return c.unique() > at+50 })
		writers[i].stop()
	}
	total, totalDups, rolledBack := 0, 0, 0
	for i, c := range clusters {
		delivered, dups := c.verify(writers[i], 60*time.Second)
		t.Logf("outbox %s: %d committed records delivered, %d duplicates", c.cfg.Schema, delivered, dups)
		total += delivered
		totalDups += dups
		rolledBack += len(writers[i].rolledBack)
	}
	faultSummary{name: "many_outboxes_sigkill", records: total, rolledBack: rolledBack, faults: "sigkill:1", duplicates: totalDups,
		recovery: "takeover=" + took.Round(10*time.Millisecond).String(),
		note:     "3 outboxes (3 schemas, 2 database URLs) in 2 relay processes, 1 SIGKILLed"}.log(t)
	lead.stop(m2)
}
