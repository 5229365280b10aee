package inbox

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The inbox sends the claim in the same round trip as the statement that
// opens its transaction (BEGIN, or SAVEPOINT in a watermill-sql
// subscriber's transaction): a pgx.Batch of the two. pgx's own transaction
// types cannot be built around a transaction opened that way, so the
// handler gets one of the two types below, which behave as pgx's (same
// closed-state errors, ErrTxCommitRollback when COMMIT finds the
// transaction failed, savepoints for Begin).

// connTx is a transaction the inbox opened on conn with BEGIN.
type connTx struct {
	conn   *pgx.Conn
	ctx    context.Context // the message's: bounds LargeObjects' set-up
	ended  pgx.Tx          // a committed pgx transaction: what Query, SendBatch and LargeObjects return when closed
	closed bool
	spNum  int64
	// lo, set by the first LargeObjects call, is pgx's transaction object
	// over this same transaction (pgx.LargeObjects can only be built from
	// one); Commit and Rollback then end the transaction through it.
	lo pgx.Tx
}

var _ pgx.Tx = (*connTx)(nil)

// Begin starts a pseudo nested transaction (a savepoint).
func (tx *connTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if tx.closed {
		return nil, pgx.ErrTxClosed
	}
	tx.spNum++
	name := "sp_" + strconv.FormatInt(tx.spNum, 10)
	if _, err := tx.conn.Exec(ctx, "savepoint "+name); err != nil {
		return nil, err
	}
	return &savepointTx{parent: tx, name: name, ended: tx.ended}, nil
}

// Commit commits the transaction; it returns an error wrapping
// pgx.ErrTxCommitRollback if PostgreSQL rolled it back instead (a
// statement in it failed).
func (tx *connTx) Commit(ctx context.Context) error {
	if tx.closed {
		return pgx.ErrTxClosed
	}
	if tx.lo != nil {
		tx.closed = true
		return tx.lo.Commit(ctx)
	}
	tag, err := tx.conn.Exec(ctx, "commit")
	tx.closed = true
	if err != nil {
		if tx.conn.PgConn().TxStatus() != 'I' {
			_ = tx.conn.Close(context.WithoutCancel(ctx)) // unknown state: the pool discards it
		}
		return err
	}
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// Rollback rolls the transaction back; a failure closes the connection.
func (tx *connTx) Rollback(ctx context.Context) error {
	if tx.closed {
		return pgx.ErrTxClosed
	}
	if tx.lo != nil {
		tx.closed = true
		return tx.lo.Rollback(ctx)
	}
	_, err := tx.conn.Exec(ctx, "rollback")
	tx.closed = true
	if err != nil {
		_ = tx.conn.Close(context.WithoutCancel(ctx))
		return err
	}
	return nil
}

func (tx *connTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if tx.closed {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	return tx.conn.Exec(ctx, sql, args...)
}

func (tx *connTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if tx.closed {
		return nil, pgx.ErrTxClosed
	}
	return tx.conn.Prepare(ctx, name, sql)
}

func (tx *connTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if tx.closed {
		return tx.ended.Query(ctx, sql, args...) // rows failing with pgx.ErrTxClosed
	}
	return tx.conn.Query(ctx, sql, args...)
}

func (tx *connTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if tx.closed {
		return tx.ended.QueryRow(ctx, sql, args...) // fails with pgx.ErrTxClosed
	}
	return tx.conn.QueryRow(ctx, sql, args...)
}

func (tx *connTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if tx.closed {
		return 0, pgx.ErrTxClosed
	}
	return tx.conn.CopyFrom(ctx, table, columns, src)
}

func (tx *connTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if tx.closed {
		return tx.ended.SendBatch(ctx, b) // fails with pgx.ErrTxClosed
	}
	return tx.conn.SendBatch(ctx, b)
}

// LargeObjects returns the large objects of the transaction. The first
// call costs one round trip (an empty statement) to obtain pgx's own
// transaction object over this transaction, which pgx.LargeObjects needs.
// If the transaction is closed, or that round trip fails (the
// transaction is then unusable), the methods of the returned value fail
// with pgx.ErrTxClosed.
func (tx *connTx) LargeObjects() pgx.LargeObjects {
	if tx.lo == nil && !tx.closed {
		lo, err := tx.conn.BeginTx(tx.ctx, pgx.TxOptions{BeginQuery: ";"})
		if err != nil {
			return tx.ended.LargeObjects()
		}
		tx.lo = lo
	}
	if tx.lo == nil {
		return tx.ended.LargeObjects()
	}
	return tx.lo.LargeObjects()
}

func (tx *connTx) Conn() *pgx.Conn { return tx.conn }

// savepointTx is a pseudo nested transaction of parent, opened with
// SAVEPOINT name: the inbox's own in a watermill-sql subscriber's
// transaction, or one Begin of a connTx.
type savepointTx struct {
	parent pgx.Tx
	name   string
	ended  pgx.Tx // as connTx.ended
	closed bool
}

var _ pgx.Tx = (*savepointTx)(nil)

// Begin starts a savepoint of the parent transaction.
func (sp *savepointTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if sp.closed {
		return nil, pgx.ErrTxClosed
	}
	return sp.parent.Begin(ctx)
}

// Commit releases the savepoint.
func (sp *savepointTx) Commit(ctx context.Context) error {
	if sp.closed {
		return pgx.ErrTxClosed
	}
	_, err := sp.parent.Exec(ctx, "release savepoint "+sp.name)
	sp.closed = true
	return err
}

// Rollback rolls back to the savepoint.
func (sp *savepointTx) Rollback(ctx context.Context) error {
	if sp.closed {
		return pgx.ErrTxClosed
	}
	_, err := sp.parent.Exec(ctx, "rollback to savepoint "+sp.name)
	sp.closed = true
	return err
}

func (sp *savepointTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if sp.closed {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	return sp.parent.Exec(ctx, sql, args...)
}

func (sp *savepointTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if sp.closed {
		return nil, pgx.ErrTxClosed
	}
	return sp.parent.Prepare(ctx, name, sql)
}

func (sp *savepointTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if sp.closed {
		return sp.ended.Query(ctx, sql, args...) // rows failing with pgx.ErrTxClosed
	}
	return sp.parent.Query(ctx, sql, args...)
}

func (sp *savepointTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if sp.closed {
		return sp.ended.QueryRow(ctx, sql, args...) // fails with pgx.ErrTxClosed
	}
	return sp.parent.QueryRow(ctx, sql, args...)
}

func (sp *savepointTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if sp.closed {
		return 0, pgx.ErrTxClosed
	}
	return sp.parent.CopyFrom(ctx, table, columns, src)
}

func (sp *savepointTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if sp.closed {
		return sp.ended.SendBatch(ctx, b) // fails with pgx.ErrTxClosed
	}
	return sp.parent.SendBatch(ctx, b)
}

// LargeObjects returns the parent transaction's large objects (their
// statements run inside this savepoint while it is open).
func (sp *savepointTx) LargeObjects() pgx.LargeObjects {
	if sp.closed {
		return sp.ended.LargeObjects()
	}
	return sp.parent.LargeObjects()
}

func (sp *savepointTx) Conn() *pgx.Conn { return sp.parent.Conn() }
