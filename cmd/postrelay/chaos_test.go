package main

import (
	"cmp"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chaosRounds is how many faults the chaos tests inject; POSTRELAY_CHAOS_ROUNDS
// raises it for a longer run (CI runs the short default).
func chaosRounds() int {
	if n, err := strconv.Atoi(os.Getenv("POSTRELAY_CHAOS_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 3
}

// faultSummary is one fault test's figures. log writes them as one
// machine-readable line that .ci/chaos-summary turns into a table row:
//
//	FAULT-SUMMARY name=sigkill_repeated records=468 rolled_back=120 faults=sigkill:3 lost=0 duplicates=3 recovery=- note=...
//
// Values contain no spaces, except note, which runs to the end of the line.
type faultSummary struct {
	name       string
	records    int    // committed records, every one delivered
	rolledBack int    // rolled-back records, none delivered
	faults     string // what was injected, kind:count
	lost       int    // committed records never delivered: verify fails the test unless 0
	duplicates int    // deliveries beyond the first of a record
	recovery   string // the test's recovery figure, or "-"
	note       string
}

func (f faultSummary) log(t *testing.T) {
	t.Helper()
	t.Logf("FAULT-SUMMARY name=%s records=%d rolled_back=%d faults=%s lost=%d duplicates=%d recovery=%s note=%s",
		f.name, f.records, f.rolledBack, f.faults, f.lost, f.duplicates, cmp.Or(f.recovery, "-"), f.note)
}

// Relays are SIGKILLed repeatedly, a random victim each round, and a fresh
// one started: nothing committed is lost, no rolled-back record is
// delivered, and order per key of first deliveries holds.
func TestProcessesSurviveRepeatedKills(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.startWriter(30, 5*time.Millisecond)
	live := []*relay{c.start("k0"), c.start("k1"), c.start("k2")}
	rng := rand.New(rand.NewPCG(7, 7))
	next := 3
	var maxGap time.Duration
	for round := range chaosRounds() {
		before := len(c.deliveries())
		waitFor(t, 30*time.Second, "deliveries flow", func() bool { return len(c.deliveries()) > before+100 })
		i := rng.IntN(len(live))
		victim := live[i]
		require.NoError(t, victim.cmd.Process.Signal(syscall.SIGKILL))
		<-victim.exited
		live = append(live[:i], live[i+1:]...)
		live = append(live, c.start("k"+strconv.Itoa(next)))
		next++
		t.Logf("round %d: killed %s", round+1, victim.id)
		atKill := len(c.deliveries())
		maxGap = max(maxGap, waitFor(t, 30*time.Second, "deliveries resume after the kill", func() bool { return len(c.deliveries()) > atKill+100 }))
	}
	w.stop()
	delivered, dups := c.verify(w, 60*time.Second)
	t.Logf("repeated kills: %d rounds, %d committed records delivered, %d rolled back never delivered, %d duplicates",
		chaosRounds(), delivered, len(w.rolledBack), dups)
	faultSummary{name: "sigkill_repeated", records: len(w.committed), rolledBack: len(w.rolledBack),
		faults: "sigkill:" + strconv.Itoa(chaosRounds()), duplicates: dups,
		recovery: "max_100_more=" + maxGap.Round(time.Millisecond).String(),
		note:     "3 relays, a random one SIGKILLed per round and replaced; recovery is the longest wait for 100 more deliveries after a kill"}.log(t)
	for _, r := range live {
		c.stop(r)
	}
}

// A rolling restart under steady load — each relay stopped with SIGTERM and
// replaced, one by one — never leaves records undelivered for longer than
// the lease TTL, since a graceful stop hands its partitions over at once.
func TestRollingRestartKeepsDelivering(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.startWriter(30, 5*time.Millisecond)
	live := []*relay{c.start("r0"), c.start("r1"), c.start("r2")}
	waitFor(t, 30*time.Second, "deliveries flow", func() bool { return len(c.deliveries()) > 100 })

	// Track the longest gap between deliveries on the broker side.
	stopWatch := make(chan struct{})
	gapDone := make(chan time.Duration)
	go func() {
		var maxGap time.Duration
		lastN, lastAt := len(c.deliveries()), time.Now()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopWatch:
				gapDone <- maxGap
				return
			case <-tick.C:
				if n := len(c.deliveries()); n > lastN {
					maxGap = max(maxGap, time.Since(lastAt))
					lastN, lastAt = n, time.Now()
				}
			}
		}
	}()
	for i := range live {
		old := live[i]
		c.stop(old)
		id := "r" + strconv.Itoa(i+3)
		live[i] = c.start(id)
		before := len(c.deliveries())
		waitFor(t, 30*time.Second, "deliveries continue", func() bool { return len(c.deliveries()) > before+50 })
		// As an orchestrator waits for a replacement to be ready before it
		// stops the next instance: the new relay holds partitions. (A
		// relay process starts in ~0.5 s on a quiet machine, several
		// seconds on a loaded one; stopping the last old relay before its
		// replacements run leaves nobody to hand over to.)
		waitFor(t, 30*time.Second, id+" holds partitions", func() bool {
			for _, owner := range c.owners() {
				if owner == id {
					return true
				}
			}
			return false
		})
	}
	close(stopWatch)
	gap := <-gapDone
	w.stop()
	delivered, dups := c.verify(w, 60*time.Second)
	t.Logf("rolling restart: %d committed records delivered, %d duplicates, longest delivery gap %v (lease TTL %v)",
		delivered, dups, gap.Round(time.Millisecond), procLeaseTTL)
	require.Less(t, gap, procLeaseTTL)
	faultSummary{name: "rolling_restart", records: len(w.committed), rolledBack: len(w.rolledBack),
		faults: "sigterm:3", duplicates: dups, recovery: "max_gap=" + gap.Round(time.Millisecond).String(),
		note: "3 relays replaced one by one under load; lease TTL " + procLeaseTTL.String()}.log(t)
	for _, r := range live {
		c.stop(r)
	}
}
