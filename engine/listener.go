package engine

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postrelay/postrelay/actors"
)

// Wake-ups: the listener hears the writers' notifications and wakes the
// partition named and the tail poll; the tail poll finds the owned
// partitions with new records and wakes them. Both only wake: what a
// partition does is its actor's business (partition_actor.go).

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
}

// listener holds one connection that LISTENs on the schema's channel and
// wakes the partition actor a notification names. NOTIFY reaches every
// instance, so the owner always hears it; the others ignore it (their waker
// for that partition has no reader). On every (re)connect it wakes all
// partitions, since notifications sent while it was away are gone.
type listener struct {
	d listenerDeps
}

func (l *listener) Serve(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, l.d.connConfig.Copy())
	if err != nil {
		return fmt.Errorf("postrelay: listener: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.d.channel}.Sanitize()); err != nil {
		return fmt.Errorf("postrelay: listener: listen: %w", err)
	}
	for _, w := range l.d.wakers {
		w.Wake()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("postrelay: listener: %w", err)
		}
		p, err := strconv.Atoi(n.Payload)
		if err != nil || p < 0 || p >= len(l.d.wakers) {
			continue
		}
		// Wake the partition at once (lowest latency), and the tail poll
		// for the records of writes that did not notify.
		l.d.wakers[p].Wake()
		l.d.tail.Wake()
	}
}

// ownedPartitions is the list of partitions this instance holds, sorted, as
// the coordinator last published it; the tail poll reads it.
type ownedPartitions struct {
	p atomic.Pointer[[]int32]
}

// publish replaces the list.
func (o *ownedPartitions) publish(ps []int32) { o.p.Store(&ps) }

// load returns the list last published (nil before the first).
func (o *ownedPartitions) load() []int32 {
	if ps := o.p.Load(); ps != nil {
		return *ps
	}
	return nil
}

// tailDeps is what the tail poll uses.
type tailDeps struct {
	// interval is Config.TailInterval.
	interval time.Duration
	// store runs the tail query (store.sqlTail on the delivery pool).
	store *store
	// wakers wakes each partition's actor, by partition.
	wakers []*actors.Waker
	// owned is what the coordinator holds: only those are probed.
	owned *ownedPartitions
	// waker wakes the tail poll (the listener holds it too).
	waker *actors.Waker
}

// tail finds the partitions that received records since it last looked, in
// one query over the newest ids of the partitions this instance owns, and
// wakes their actors. It is the relay's steady-state wake-up: while records
// arrive it polls every TailInterval; a notification (the writer sends at
// most one per NotifyInterval) or a poll that finds new records keeps it
// polling for tailBusyWindow; after that, with nothing new, its polls
// space out (doubling) up to tailIdleInterval: the next write's
// notification wakes it at once, and the idle polls bound the wait of a
// record whose write did not notify (a write within NotifyInterval of a
// notifying write that rolled back, or DisableNotify) at about
// tailIdleInterval.
//
// Its state (what it announced) lives as long as one start: a restart
// builds a new tail, which looks again from scratch.
type tail struct {
	d         tailDeps
	lastMax   int64
	announced []int64 // per partition, the newest id a wake-up announced
}

func newTail(d tailDeps) *tail {
	return &tail{d: d, announced: make([]int64, len(d.wakers))}
}

// tailLookback is how far below the newest id seen a tail poll looks, for
// records whose transaction committed after that of a higher id.
const tailLookback = 1000

// tailBusyWindow is how long the tail keeps polling every TailInterval
// after the last notification or the last poll that found new records.
const tailBusyWindow = time.Second

// tailIdleInterval is the longest gap between tail polls. An idle relay
// polls 20 times a second, one index probe per owned partition each.
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
		timer.Reset(interval)
	}
}

// poll wakes the partitions owned here whose newest record is newer than
// what was already announced to them. Probing only the owned partitions
// keeps the tail polls of all instances together at one probe per partition,
// whatever the number of instances (each probed every partition before).
func (t *tail) poll(ctx context.Context) (found bool, err error) {
	owned := t.d.owned.load()
	if len(owned) == 0 {
		return false, nil // nothing owned here, nobody to wake
	}
	rows, err := t.d.store.hotPool().Query(ctx, t.d.store.sqlTail, max(t.lastMax-tailLookback, 0), owned)
	if err != nil {
		return false, err
	}
	var p int32
	var maxID int64
	_, err = pgx.ForEachRow(rows, []any{&p, &maxID}, func() error {
		if int(p) < len(t.d.wakers) && maxID > t.announced[p] {
			t.announced[p] = maxID
			t.d.wakers[p].Wake()
			found = true
		}
		t.lastMax = max(t.lastMax, maxID)
		return nil
	})
	return found, err
}
