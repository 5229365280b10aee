package main

import (
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
	}
	w.stop()
	delivered, dups := c.verify(w, 60*time.Second)
	t.Logf("repeated kills: %d rounds, %d committed records delivered, %d rolled back never delivered, %d duplicates",
		chaosRounds(), delivered, len(w.rolledBack), dups)
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
		live[i] = c.start("r" + strconv.Itoa(i+3))
		before := len(c.deliveries())
		waitFor(t, 30*time.Second, "deliveries continue", func() bool { return len(c.deliveries()) > before+50 })
	}
	close(stopWatch)
	gap := <-gapDone
	w.stop()
	delivered, dups := c.verify(w, 60*time.Second)
	t.Logf("rolling restart: %d committed records delivered, %d duplicates, longest delivery gap %v (lease TTL %v)",
		delivered, dups, gap.Round(time.Millisecond), procLeaseTTL)
	require.Less(t, gap, procLeaseTTL)
	for _, r := range live {
		c.stop(r)
	}
}
