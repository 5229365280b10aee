package engine

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// listener holds one connection that LISTENs on the schema's channel and
// wakes the partition actor a notification names. NOTIFY reaches every
// instance, so the owner always hears it; the others ignore it (their waker
// for that partition has no reader). On every (re)connect it wakes all
// partitions, since notifications sent while it was away are gone.
type listener struct {
	e *Engine
}

func (l *listener) Serve(ctx context.Context) error {
	cfg := l.e.cfg
	conn, err := pgx.ConnectConfig(ctx, l.e.pool.Config().ConnConfig.Copy())
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
		l.e.wakers[p].Wake()
	}
}
