package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postrelay/postrelay/actors"
)

// Wake-ups: the listener hears the writers' notifications and wakes the
// tail poll; the tail poll fetches the new records of the partitions whose
// actors wait for work and hands each its batch (handoff.go). What a
// partition does with a batch is its actor's business (partition_actor.go).

// listenerDeps is what the listener uses.
type listenerDeps struct {
	// connConfig is the configuration of the LISTEN connection (a copy is
	// used per connect).
	connConfig *pgx.ConnConfig
	// channel is the notification channel (Config.NotifyChannel).
	channel string
	// wakers wakes each partition's actor, by partition.
	wakers []*actors.Waker
	// tail wakes the tail poll.
	tail *actors.Waker
	// closeWait bounds the wait for the connection's cleanup on the way
	// out (Config.StopTimeout).
	closeWait time.Duration
}

// listener holds one connection that LISTENs on the schema's channel and
// wakes the tail poll on every notification (NOTIFY reaches every
// instance; each instance's tail fetches only the partitions it holds). On
// every (re)connect it wakes all partition actors, which then fetch on their
// own, since notifications sent while it was away are gone.
type listener struct {
	d listenerDeps
}

func (l *listener) Serve(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, l.d.connConfig.Copy())
	if err != nil {
		return fmt.Errorf("postrelay: listener: connect: %w", err)
	}
	defer func() {
		_ = conn.Close(context.WithoutCancel(ctx))
		// A stop interrupts the wait for a notification; pgx then closes
		// the connection itself and sends PostgreSQL a cancel request in
		// the background, and Close returns at once. Wait for that, as
		// pgxpool does for its connections: a process that exits with the
		// request in flight can crash an older PgBouncer
		// (pgbouncer/pgbouncer#801, Debian 12's 1.18).
		t := time.NewTimer(l.d.closeWait)
		defer t.Stop()
		select {
		case <-conn.PgConn().CleanupDone():
		case <-t.C:
		}
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.d.channel}.Sanitize()); err != nil {
		return fmt.Errorf("postrelay: listener: listen: %w", err)
	}
	for _, w := range l.d.wakers {
		w.Wake()
	}
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("postrelay: listener: %w", err)
		}
		// The tail poll fetches for every waiting partition at once.
		l.d.tail.Wake()
	}
}

// tailDeps is what the tail poll uses.
type tailDeps struct {
	// interval is Config.TailInterval.
	interval time.Duration
	// limit is the most records the tail fetches for one partition.
	limit int
	// store runs the tail fetch (store.sqlTailFetch on the delivery pool).
	store *store
	// handoffs are the running partition actors' handoffs, by partition:
	// only those that wait for work are fetched for.
	handoffs handoffs
	// waker wakes the tail poll (the listener holds it too).
	waker *actors.Waker
	// instance is Config.InstanceID, the owner the lease fence of the
	// completions the poll carries checks.
	instance string
}

// tail fetches, in one statement, the new records of every partition whose
// actor waits for work, and hands each actor its batch (see handoff). It is
// the relay's steady-state fetch: while records arrive it polls every
// TailInterval; a notification (the writer sends at most one per
// NotifyInterval) or a poll that finds new records keeps it polling for
// tailBusyWindow; after that, with nothing new, its polls space out
// (doubling) up to tailIdleInterval: the next write's notification wakes
// it at once, and the idle polls bound the wait of a record whose write did
// not notify (a write within NotifyInterval of a notifying write that
// rolled back, or DisableNotify) at about tailIdleInterval. A backlog is
// not its business: an actor whose batch came back full fetches on its own
// until its partition is drained, and the tail leaves it alone meanwhile.
//
// A poll finds the waiting partitions with new records by one probe at the
// end of each one's key range, for ids above the highest it saw less
// tailLookback (for transactions that committed after that of a higher
// id): the probe reads only the partition's index entries above that id,
// so its cost does not grow with what was delivered before that window
// (dead entries stay until a vacuum, and autovacuum may be off or behind). A record
// that commits later still is fetched by its actor's own poll
// (PollInterval).
// Its state (the highest id seen) lives as long as one start: a restart
// builds a new tail, which starts from the newest id again.
type tail struct {
	d       tailDeps
	lastMax int64
	started bool

	// per poll, reused
	reqs  []fetchReq
	hs    []*handoff
	words []uint64
	dones []*tailDone
	out   []fetchResult
	args  arrayText
}

func newTail(d tailDeps) *tail { return &tail{d: d} }

// tailLookback is how far below the highest id seen a tail poll looks, for
// records whose transaction committed after that of a higher id.
const tailLookback = 1000

// tailBatchLimit is the most records the tail fetches for one partition;
// an actor whose handed batch is full fetches the rest itself.
const tailBatchLimit = 100

// tailBusyWindow is how long the tail keeps polling every TailInterval
// after the last notification or the last poll that found new records.
const tailBusyWindow = time.Second

// tailIdleInterval is the longest gap between tail polls. An idle relay
// polls 20 times a second: one index probe above the highest id seen.
const tailIdleInterval = 50 * time.Millisecond

// nextTailInterval is the wait before the next tail poll: TailInterval
// while busy, otherwise double the last wait, up to tailIdleInterval.
func nextTailInterval(busy bool, last, tailInterval time.Duration) time.Duration {
	if busy {
		return tailInterval
	}
	return min(2*last, max(tailIdleInterval, tailInterval))
}

func (t *tail) Serve(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	busyUntil := time.Now().Add(tailBusyWindow)
	interval := t.d.interval
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.d.waker.C():
			busyUntil = time.Now().Add(tailBusyWindow)
		case <-timer.C:
		}
		timer.Stop()
		started := time.Now()
		found, err := t.poll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("postrelay: tail poll: %w", err)
		}
		now := time.Now()
		if found {
			busyUntil = now.Add(tailBusyWindow)
		}
		interval = nextTailInterval(now.Before(busyUntil), interval, t.d.interval)
		timer.Reset(tailWait(interval, now.Sub(started)))
	}
}

// tailWait is the wait after a poll that took took. While polls are quick
// (a quarter of interval or less) they start every interval: a record
// committed just after a poll's snapshot waits interval for the next, not
// interval plus the poll's own time. A slower poll is followed by a wait
// three times as long as it took, up to interval, so the tail keeps its
// connection at most a quarter busy unless the interval itself allows more
// (where a poll takes a third of interval or more this is the wait of an
// interval after each poll): under load each poll carries more records,
// and the database's CPU goes to the application's commits.
func tailWait(interval, took time.Duration) time.Duration {
	return max(interval-took, min(3*took, interval))
}

// poll fetches for the waiting actors and hands over what it found. It
// reports whether ids above the last poll's appeared.
func (t *tail) poll(ctx context.Context) (found bool, err error) {
	if !t.started {
		// Start at the newest id: what is older is the actors' own
		// start-up fetch's business.
		if t.lastMax, err = t.d.store.maxID(ctx); err != nil {
			return false, err
		}
		t.started = true
	}
	t.reqs, t.hs, t.words, t.dones = t.reqs[:0], t.hs[:0], t.words[:0], t.dones[:0]
	completing := false
	for p := range t.d.handoffs {
		h := t.d.handoffs[p].Load()
		if h == nil {
			continue
		}
		if w, ok := h.waiting(); ok {
			t.reqs = append(t.reqs, fetchReq{p: p, limit: t.d.limit})
			t.hs = append(t.hs, h)
			t.words = append(t.words, w)
			// The delivered batch the actor left for this poll, if any. It
			// is read after the word: one the actor left in a later
			// generation fails the claim below, and the actor completes
			// it itself, once this poll let go of carrying.
			d := h.done.Load()
			if d != nil {
				h.carrying.Lock()
				if h.done.Load() != d {
					h.carrying.Unlock() // taken back meanwhile
					d = nil
				}
			}
			t.dones = append(t.dones, d)
			completing = completing || d != nil
		}
	}
	if len(t.reqs) == 0 {
		return false, nil // every actor is busy (or none runs): nothing to do
	}
	if cap(t.out) < len(t.reqs) {
		t.out = make([]fetchResult, len(t.reqs))
	}
	out := t.out[:len(t.reqs)]
	dones := t.dones
	if !completing {
		dones = nil
	}
	maxID, held, err := t.fetch(ctx, out, dones)
	if err != nil {
		clear(t.dones)
		return false, err
	}
	if maxID > t.lastMax {
		t.lastMax, found = maxID, true
	}
	// The actors handed a batch complete them together (see cohort).
	n := 0
	for i := range t.reqs {
		if d := t.dones[i]; d != nil {
			out[i].done = d
			if !slices.Contains(held, int32(t.reqs[i].p)) {
				out[i].lost, out[i].batch = true, nil // its lease is gone: so is the batch
			}
		}
		if len(out[i].batch) > 0 {
			n++
		}
	}
	coh := newCohort(n)
	for i := range t.reqs {
		hasBatch := len(out[i].batch) > 0
		if !hasBatch && out[i].done == nil {
			continue
		}
		if hasBatch {
			out[i].cohort = coh
		}
		if !t.hs[i].claim(t.words[i], out[i]) && hasBatch {
			coh.arrive() // the actor took its partition back: not a member
		}
		out[i] = fetchResult{}
	}
	clear(t.dones)
	return found, nil
}

// fetch runs the poll's statement, then lets go of the handoffs whose
// delivered batch it carried (even if the statement panicked: an actor
// waits for that before it completes the batch itself).
func (t *tail) fetch(ctx context.Context, out []fetchResult, dones []*tailDone) (int64, []int32, error) {
	defer func() {
		for i, d := range dones {
			if d != nil {
				t.hs[i].carrying.Unlock()
			}
		}
	}()
	return t.d.store.tailFetch(ctx, max(t.lastMax-tailLookback, 0), t.reqs, out, t.d.instance, dones, &t.args)
}
