package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// serialFaultsEnv gates the tests that restart the shared PostgreSQL
// server: they would break every other test running at the same time, so
// .ci/test runs them in a second, serial step with this variable set.
const serialFaultsEnv = "POSTRELAY_SERIAL_FAULTS"

// PostgreSQL is restarted mid-run (fast, then immediate shutdown): the
// relays reconnect by themselves and every committed record is delivered,
// in order per key.
func TestPostgresRestartMidRun(t *testing.T) {
	if os.Getenv(serialFaultsEnv) == "" {
		t.Skipf("restarts the shared PostgreSQL server: run by .ci/test's serial step (%s=1)", serialFaultsEnv)
	}
	versions, err := os.ReadDir("/etc/postgresql")
	require.NoError(t, err, "no local PostgreSQL cluster to restart")
	version := versions[0].Name()
	c := newCluster(t)
	live := []*relay{c.start("pg0"), c.start("pg1")}
	for _, mode := range []string{"fast", "immediate"} {
		// The writer keeps writing through the restart; a transaction whose
		// COMMIT failed is counted as neither committed nor rolled back.
		w := c.startWriter(20, 5*time.Millisecond)
		before := c.unique()
		waitFor(t, 30*time.Second, "deliveries flow", func() bool { return c.unique() > before+100 })
		start := time.Now()
		out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", mode).CombinedOutput()
		require.NoError(t, err, string(out))
		restarted := time.Now()
		t.Logf("PostgreSQL restarted (%s) in %v", mode, restarted.Sub(start).Round(time.Millisecond))
		atRestart := c.unique()
		first := waitFor(t, 60*time.Second, "a new record delivered after the restart", func() bool { return c.unique() > atRestart })
		waitFor(t, 60*time.Second, "new records delivered after the restart", func() bool { return c.unique() > atRestart+100 })
		t.Logf("first new record delivered %v, 100 new records %v after the restart", first.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
		w.stop()
		_, dups := c.verify(w, 60*time.Second)
		t.Logf("%s restart: all %d committed records of the run delivered, %d duplicates on the topic so far", mode, len(w.committed), dups)
		faultSummary{name: "pg_restart_" + mode, records: len(w.committed), rolledBack: len(w.rolledBack), faults: "pg_restart:1",
			duplicates: dups, recovery: "first_delivery=" + first.Round(time.Millisecond).String(),
			note: "2 relays; pg_ctlcluster restart -m " + mode + " (took " + restarted.Sub(start).Round(time.Millisecond).String() + "); duplicates counted over the topic so far"}.log(t)
	}
	for _, r := range live {
		require.False(t, strings.Contains(r.log(), "panic:"), r.log())
		c.stop(r)
	}
}
