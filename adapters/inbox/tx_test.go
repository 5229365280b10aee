package inbox_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/inbox"
)

// onePool is a pool of one connection on b's database: its backend pid
// shows whether the inbox handed the connection back idle (the same pid)
// or left it in a transaction (pgxpool discards it: a new pid).
func onePool(t *testing.T, b *bundle) *pgxpool.Pool {
	t.Helper()
	cfg := b.pool.Config()
	cfg.MaxConns, cfg.MinConns = 1, 0
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

func backendPID(t *testing.T, p *pgxpool.Pool) int {
	t.Helper()
	var pid int
	require.NoError(t, p.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid))
	return pid
}

// The claim is sent with BEGIN in one round trip, so the handler's tx is
// the inbox's own pgx.Tx: it behaves as pgx's (savepoints, closed-state
// errors, a COMMIT PostgreSQL turned into a ROLLBACK is an error), and
// every path — applied, duplicate, handler error, panic, failed commit —
// hands the connection back out of its transaction.
func TestInboxTxBehavesAsPgxTx(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pool := onePool(t, b)
	ib, err := inbox.New(context.Background(), pool, inbox.Config{Consumer: "c", Schema: b.schema, MeterProvider: b.mp})
	require.NoError(t, err)
	pid := backendPID(t, pool)
	insert := func(ctx context.Context, tx pgx.Tx, id, by string) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+b.effects+" (message_id, by_consumer) VALUES ($1, $2)", id, by)
		return err
	}

	// Savepoints: a rolled-back nested transaction undoes its own write
	// only; a committed one's write commits with the message.
	var kept pgx.Tx
	id := msgID(t, 1)
	require.NoError(t, ib.Handler(func(msg *message.Message, tx pgx.Tx) error {
		ctx := msg.Context()
		kept = tx
		require.NoError(t, insert(ctx, tx, id, "outer"))
		undone, err := tx.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, insert(ctx, undone, id, "undone"))
		require.NoError(t, undone.Rollback(ctx))
		require.ErrorIs(t, undone.Commit(ctx), pgx.ErrTxClosed)
		nested, err := tx.Begin(ctx)
		require.NoError(t, err)
		deeper, err := nested.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, insert(ctx, deeper, id, "deeper"))
		require.NoError(t, deeper.Commit(ctx))
		require.NoError(t, nested.Commit(ctx))
		var claimed int
		require.NoError(t, tx.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{b.schema, "processed"}.Sanitize()+" WHERE message_id = $1", id).Scan(&claimed))
		require.Equal(t, 1, claimed, "the handler runs in the transaction of the (uncommitted) claim")
		require.Same(t, tx.Conn(), nested.Conn())
		return nil
	})(message.NewMessage(id, nil)))
	var by string
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT string_agg(by_consumer, ',' ORDER BY n) FROM "+b.effects+" WHERE message_id = $1", id).Scan(&by))
	require.Equal(t, "outer,deeper", by)
	require.Equal(t, pid, backendPID(t, pool), "applied: connection handed back idle")

	// The transaction is closed once the handler returns.
	ctx := context.Background()
	_, err = kept.Exec(ctx, "SELECT 1")
	require.ErrorIs(t, err, pgx.ErrTxClosed)
	_, err = kept.Query(ctx, "SELECT 1")
	require.ErrorIs(t, err, pgx.ErrTxClosed)
	require.ErrorIs(t, kept.QueryRow(ctx, "SELECT 1").Scan(new(int)), pgx.ErrTxClosed)
	require.ErrorIs(t, kept.SendBatch(ctx, &pgx.Batch{}).Close(), pgx.ErrTxClosed)
	_, err = kept.Begin(ctx)
	require.ErrorIs(t, err, pgx.ErrTxClosed)
	require.ErrorIs(t, kept.Commit(ctx), pgx.ErrTxClosed)
	require.ErrorIs(t, kept.Rollback(ctx), pgx.ErrTxClosed)
	closedLOs := kept.LargeObjects()
	_, err = closedLOs.Create(ctx, 0)
	require.ErrorIs(t, err, pgx.ErrTxClosed)

	// Duplicate, handler error, panic: rolled back, connection reused.
	require.NoError(t, ib.Handler(b.apply("dup"))(message.NewMessage(id, nil)))
	require.Equal(t, pid, backendPID(t, pool), "duplicate: connection handed back idle")
	require.Error(t, ib.Handler(func(*message.Message, pgx.Tx) error { return errors.New("no") })(message.NewMessage(msgID(t, 2), nil)))
	require.Equal(t, pid, backendPID(t, pool), "handler error: connection handed back idle")
	require.ErrorIs(t, ib.Handler(func(*message.Message, pgx.Tx) error { panic("boom") })(message.NewMessage(msgID(t, 2), nil)), inbox.ErrHandlerPanic)
	require.Equal(t, pid, backendPID(t, pool), "panic: connection handed back idle")

	// A handler that swallows a failed statement and returns nil: COMMIT
	// rolls back; the message is nacked, nothing is applied, and the
	// redelivery applies it once.
	id3 := msgID(t, 3)
	err = ib.Handler(func(msg *message.Message, tx pgx.Tx) error {
		require.NoError(t, insert(msg.Context(), tx, id3, "lost"))
		_, err := tx.Exec(msg.Context(), "SELECT * FROM no_such_table")
		require.Error(t, err)
		return nil
	})(message.NewMessage(id3, nil))
	require.ErrorIs(t, err, pgx.ErrTxCommitRollback)
	require.Contains(t, err.Error(), `consumer "c": commit message `+id3)
	require.Equal(t, 0, b.effectCount(t, id3))
	require.Equal(t, pid, backendPID(t, pool), "failed commit: connection handed back idle")
	require.NoError(t, ib.Handler(b.apply("c"))(message.NewMessage(id3, nil)))
	require.Equal(t, 1, b.effectCount(t, id3))
	require.EqualValues(t, 2, b.counter(t, inbox.MetricProcessed, "c"))
	require.EqualValues(t, 1, b.counter(t, inbox.MetricDuplicates, "c"))

	// A failed claim (the table is gone) leaves no transaction open either.
	_, err = b.pool.Exec(ctx, "ALTER TABLE "+pgx.Identifier{b.schema, "processed"}.Sanitize()+" RENAME TO processed_away")
	require.NoError(t, err)
	err = ib.Handler(b.apply("c"))(message.NewMessage(msgID(t, 4), nil))
	require.ErrorIs(t, err, inbox.ErrNotMigrated)
	require.Equal(t, pid, backendPID(t, pool), "failed claim: connection handed back idle")
}

// Large objects written through the handler's tx commit with the message.
func TestInboxTxLargeObjects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ib := b.inbox(t, inbox.Config{Consumer: "c"})
	var oid uint32
	id := msgID(t, 1)
	require.NoError(t, ib.Handler(func(msg *message.Message, tx pgx.Tx) error {
		ctx := msg.Context()
		if err := b.apply("c")(msg, tx); err != nil {
			return err
		}
		los := tx.LargeObjects()
		var err error
		if oid, err = los.Create(ctx, 0); err != nil {
			return err
		}
		lo, err := los.Open(ctx, oid, pgx.LargeObjectModeWrite|pgx.LargeObjectModeRead)
		if err != nil {
			return err
		}
		if _, err := lo.Write([]byte("invoice.pdf")); err != nil {
			return err
		}
		// Through a savepoint as well.
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		spLOs := sp.LargeObjects()
		if _, err := spLOs.Open(ctx, oid, pgx.LargeObjectModeRead); err != nil {
			return err
		}
		if err := sp.Commit(ctx); err != nil {
			return err
		}
		return lo.Close()
	})(message.NewMessage(id, nil)))
	t.Cleanup(func() { _, _ = b.pool.Exec(context.Background(), "SELECT lo_unlink($1)", oid) })
	var data []byte
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT lo_get($1)", oid).Scan(&data))
	require.Equal(t, "invoice.pdf", string(data))
	require.Equal(t, 1, b.effectCount(t, id))
}
