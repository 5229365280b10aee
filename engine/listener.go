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
// one query over the newest ids, and wakes their actors. The listener wakes
// it on every notification; it then polls once more TailInterval later, for
// the writes that did not notify (see Config.NotifyInterval) and commits that
// landed just after the notifying one.
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

func (t *tail) Serve(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	armed := false
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.d.waker.C():
			// At most one poll per TailInterval; a wake-up inside the
			// interval is served by the trailing poll.
			if wait := t.d.interval - time.Since(last); wait > 0 {
				if !armed {
					timer.Reset(wait)
					armed = true
				}
				continue
			}
			if !armed {
				timer.Reset(t.d.interval)
				armed = true
			}
		case <-timer.C:
			armed = false
		}
		last = time.Now()
		if err := t.poll(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("postrelay: tail poll: %w", err)
		}
	}
}

// poll wakes the partitions owned here whose newest record is newer than
// what was already announced to them. Probing only the owned partitions
// keeps the tail polls of all instances together at one probe per partition,
// whatever the number of instances (each probed every partition before).
func (t *tail) poll(ctx context.Context) error {
	owned := t.d.owned.load()
	if len(owned) == 0 {
		return nil // nothing owned here, nobody to wake
	}
	rows, err := t.d.store.hotPool().Query(ctx, t.d.store.sqlTail, max(t.lastMax-tailLookback, 0), owned)
	if err != nil {
		return err
	}
	var p int32
	var maxID int64
	_, err = pgx.ForEachRow(rows, []any{&p, &maxID}, func() error {
		if int(p) < len(t.d.wakers) && maxID > t.announced[p] {
			t.announced[p] = maxID
			t.d.wakers[p].Wake()
		}
		t.lastMax = max(t.lastMax, maxID)
		return nil
	})
	return err
}
