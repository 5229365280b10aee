package engine

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postrelay/postrelay/actors"
)

// listener holds one connection that LISTENs on the schema's channel and
// wakes the partition actor a notification names. NOTIFY reaches every
// instance, so the owner always hears it; the others ignore it (their waker
// for that partition has no reader). On every (re)connect it wakes all
// partitions, since notifications sent while it was away are gone.
type listener struct {
	e    *Engine
	tail *actors.Waker
}

func (l *listener) Serve(ctx context.Context) error {
	cfg := l.e.cfg
	var err error
	connCfg := l.e.pool.Config().ConnConfig.Copy()
	if cfg.ListenURL != "" {
		if connCfg, err = pgx.ParseConfig(cfg.ListenURL); err != nil {
			return fmt.Errorf("postrelay: listener: ListenURL: %w", err)
		}
	}
	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return fmt.Errorf("postrelay: listener: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{cfg.NotifyChannel()}.Sanitize()); err != nil {
		return fmt.Errorf("postrelay: listener: listen: %w", err)
	}
	for _, w := range l.e.wakers {
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
		if err != nil || p < 0 || p >= len(l.e.wakers) {
			continue
		}
		// Wake the partition at once (lowest latency), and the tail poll
		// for the records of writes that did not notify.
		l.e.wakers[p].Wake()
		l.tail.Wake()
	}
}

// tail finds the partitions that received records since it last looked, in
// one query over the newest ids, and wakes their actors. The listener wakes
// it on every notification; it then polls once more TailInterval later, for
// the writes that did not notify (see Config.NotifyInterval) and commits that
// landed just after the notifying one.
type tail struct {
	e         *Engine
	waker     *actors.Waker
	lastMax   int64
	announced []int64 // per partition, the newest id a wake-up announced
}

// tailLookback is how far below the newest id seen a tail poll looks, for
// records whose transaction committed after that of a higher id.
const tailLookback = 1000

func (t *tail) Serve(ctx context.Context) error {
	t.announced = make([]int64, len(t.e.wakers))
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	armed := false
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.waker.C():
			// At most one poll per TailInterval; a wake-up inside the
			// interval is served by the trailing poll.
			if wait := t.e.cfg.TailInterval - time.Since(last); wait > 0 {
				if !armed {
					timer.Reset(wait)
					armed = true
				}
				continue
			}
			if !armed {
				timer.Reset(t.e.cfg.TailInterval)
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
	owned := t.e.owned.Load()
	if owned == nil || len(*owned) == 0 {
		return nil // nothing owned here, nobody to wake
	}
	rows, err := t.e.store.hotQuery(ctx, t.e.store.sqlTail, max(t.lastMax-tailLookback, 0), *owned)
	if err != nil {
		return err
	}
	var p int32
	var maxID int64
	_, err = pgx.ForEachRow(rows, []any{&p, &maxID}, func() error {
		if int(p) < len(t.e.wakers) && maxID > t.announced[p] {
			t.announced[p] = maxID
			t.e.wakers[p].Wake()
		}
		t.lastMax = max(t.lastMax, maxID)
		return nil
	})
	return err
}
