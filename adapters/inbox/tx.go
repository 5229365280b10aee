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
	gate  // statements go to conn while open
	conn  *pgx.Conn
	ctx   context.Context // the message's: bounds LargeObjects' set-up
	spNum int64
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
	return newSavepointTx(tx, name, tx.ended), nil
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
	gate   // statements go to parent while open
	parent pgx.Tx
	name   string
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

// LargeObjects returns the parent transaction's large objects (their
// statements run inside this savepoint while it is open).
func (sp *savepointTx) LargeObjects() pgx.LargeObjects {
	if sp.closed {
		return sp.ended.LargeObjects()
	}
	return sp.parent.LargeObjects()
}

func (sp *savepointTx) Conn() *pgx.Conn { return sp.parent.Conn() }

// newConnTx is the transaction just opened with BEGIN on conn; ended is a
// committed pgx transaction (see gate).
func newConnTx(ctx context.Context, conn *pgx.Conn, ended pgx.Tx) *connTx {
	return &connTx{gate: gate{via: conn, ended: ended}, conn: conn, ctx: ctx}
}

// newSavepointTx is the savepoint name just opened in parent.
func newSavepointTx(parent pgx.Tx, name string, ended pgx.Tx) *savepointTx {
	return &savepointTx{gate: gate{via: parent, ended: ended}, parent: parent, name: name}
}

// statements is what a connection and a transaction both run.
type statements interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// gate runs the statements of connTx and savepointTx: through via while
// open, and once closed it fails them as pgx's transactions do (those that
// return rows or results fail through ended, a committed pgx transaction,
// with pgx.ErrTxClosed).
type gate struct {
	via    statements
	ended  pgx.Tx
	closed bool
}

func (g *gate) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if g.closed {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	return g.via.Exec(ctx, sql, args...)
}

func (g *gate) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if g.closed {
		return nil, pgx.ErrTxClosed
	}
	return g.via.Prepare(ctx, name, sql)
}

func (g *gate) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if g.closed {
		return g.ended.Query(ctx, sql, args...) // rows failing with pgx.ErrTxClosed
	}
	return g.via.Query(ctx, sql, args...)
}

func (g *gate) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if g.closed {
		return g.ended.QueryRow(ctx, sql, args...) // fails with pgx.ErrTxClosed
	}
	return g.via.QueryRow(ctx, sql, args...)
}

func (g *gate) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if g.closed {
		return 0, pgx.ErrTxClosed
	}
	return g.via.CopyFrom(ctx, table, columns, src)
}

func (g *gate) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if g.closed {
		return g.ended.SendBatch(ctx, b) // fails with pgx.ErrTxClosed
	}
	return g.via.SendBatch(ctx, b)
}
