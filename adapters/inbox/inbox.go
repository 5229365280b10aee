package inbox

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/postrelay/postrelay/adapters"
)

// Span attributes set on the message context's current span.
const (
	AttrDuplicate = "postrelay.inbox.duplicate"
	AttrConsumer  = "postrelay.inbox.consumer"
)

// Inbox applies each message at most once per consumer name, in the
// transaction of the message's effects. It is safe for concurrent use.
type Inbox struct {
	pool *pgxpool.Pool
	cfg  Config
	m    *instruments

	claimSQL string
	ended    pgx.Tx // committed at New
}

// New validates cfg and registers cfg.Consumer (with its retention) in the
// schema's consumers table. It fails with ErrNotMigrated, naming the
// schema, if Migrate has not run.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Inbox, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newInstruments(cfg)
	if err != nil {
		return nil, err
	}
	ib := &Inbox{
		pool: pool, cfg: cfg, m: m,
		claimSQL: "INSERT INTO " + ident(cfg.Schema, "processed") + " (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
	}
	// The registration runs in a transaction whose pgx object, once
	// committed, serves as the closed transaction of LargeObjects (see
	// connTx).
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		ib.ended = tx
		_, err := tx.Exec(ctx, "INSERT INTO "+ident(cfg.Schema, "consumers")+" (name, retention) VALUES ($1, $2) "+
			"ON CONFLICT (name) DO UPDATE SET retention = excluded.retention WHERE consumers.retention <> excluded.retention",
			cfg.Consumer, cfg.Retention)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("inbox: register consumer %q in schema %q: %w", cfg.Consumer, cfg.Schema, notMigrated(err, cfg.Schema, "consumers"))
	}
	return ib, nil
}

// Config returns the inbox's configuration, defaults applied.
func (ib *Inbox) Config() Config { return ib.cfg }

// HandlerFunc is the business logic of a message: its writes go through
// tx — business rows, and outgoing records through engine.Writer or
// adapters.NewTxPublisher(tx, w). It must not commit or roll back tx.
type HandlerFunc func(msg *message.Message, tx pgx.Tx) error

// Handler adapts fn to a Watermill handler that applies each message once:
//
//  1. it begins a transaction and claims (Consumer, key) with an INSERT …
//     ON CONFLICT DO NOTHING, sent with the BEGIN in one round trip. A
//     concurrent claim of the same key waits for the first transaction's
//     outcome: if it commits, the message is a duplicate; if it rolls back,
//     the waiting claim wins and applies it;
//  2. a duplicate commits nothing and returns nil (the router acks it);
//  3. otherwise fn runs with the transaction; nil commits, then returns nil
//     (the router acks); an error or a panic rolls back and returns an error
//     (the router nacks, and the redelivery is applied once).
//
// If the message came from a watermill-sql subscriber built with
// BeginnerFromPgx, the claim and fn run under a savepoint of the
// subscriber's own transaction (SAVEPOINT and the claim in one round
// trip), which commits with the ack (as adapters.TxHandler does).
//
// The tx fn gets is the inbox's own pgx.Tx implementation (pgx cannot
// wrap a transaction begun in a batch): it behaves as pgx's — Begin makes
// a savepoint, every method fails with pgx.ErrTxClosed once fn has
// returned, LargeObjects works (its first call costs a round trip).
func (ib *Inbox) Handler(fn HandlerFunc) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		return ib.process(msg, fn)
	}
}

type txKey struct{}

// TxFromContext returns the inbox transaction of a message handled by
// Middleware: msg.Context() of the wrapped handler carries it.
func TxFromContext(ctx context.Context) (pgx.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(pgx.Tx)
	return tx, ok
}

// Middleware is Handler as Watermill router middleware: the wrapped handler
// finds the transaction with TxFromContext(msg.Context()). Messages it
// returns are published by the router after the commit, outside the
// transaction (at least once, not exactly once): produce through the outbox
// in tx instead. A duplicate returns no messages.
func (ib *Inbox) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		var out []*message.Message
		err := ib.process(msg, func(msg *message.Message, tx pgx.Tx) error {
			orig := msg.Context()
			msg.SetContext(context.WithValue(orig, txKey{}, tx))
			defer msg.SetContext(orig)
			var err error
			out, err = h(msg)
			return err
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// key returns the message's deduplication key.
func (ib *Inbox) key(msg *message.Message) string {
	if ib.cfg.KeyMetadata != "" {
		return msg.Metadata.Get(ib.cfg.KeyMetadata)
	}
	return msg.UUID
}

func (ib *Inbox) process(msg *message.Message, fn HandlerFunc) error {
	ctx := msg.Context()
	key := ib.key(msg)
	if key == "" {
		return ib.missingKey(ctx, msg)
	}
	start := time.Now()
	if tx, ok, err := adapters.ConsumedTx(ctx); err != nil {
		return err
	} else if ok {
		return ib.processInTx(ctx, msg, tx, key, fn)
	}

	conn, err := ib.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("inbox: consumer %q: begin: %w", ib.cfg.Consumer, err)
	}
	defer conn.Release() // after the rollback below: a connection still in a transaction is discarded
	tx := newConnTx(ctx, conn.Conn(), ib.ended)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	_, dup, err := ib.claim(ctx, tx.conn, "begin", key)
	if err != nil {
		return err
	}
	if dup {
		ib.duplicate(ctx, msg, key)
		return nil // the deferred rollback ends the transaction: nothing to commit
	}
	if err := ib.run(msg, tx, fn); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("inbox: consumer %q: commit message %s: %w", ib.cfg.Consumer, key, err)
	}
	ib.m.processed.Add(ctx, 1, ib.m.attrs)
	ib.cfg.Logger.Debug("inbox: applied", "consumer", ib.cfg.Consumer, "message_key", key, "took", time.Since(start))
	return nil
}

// processInTx claims and applies msg under a savepoint of tx, the
// transaction a watermill-sql subscriber consumed it in, which commits
// with the ack.
func (ib *Inbox) processInTx(ctx context.Context, msg *message.Message, tx pgx.Tx, key string, fn HandlerFunc) error {
	// One fixed name, so that pgx prepares and caches the statement once
	// per connection; a later SAVEPOINT of the same name (the next
	// delivery in this transaction) hides this one, and ROLLBACK TO and
	// RELEASE act on the newest.
	sp := newSavepointTx(tx, "postrelay_inbox", ib.ended)
	opened, dup, err := ib.claim(ctx, tx, "savepoint "+sp.name, key)
	if err != nil {
		// The claim failed after the savepoint: undo it, and keep the
		// subscriber's transaction usable. A claim PostgreSQL cannot even
		// prepare (its table was dropped after New) fails in pgx's
		// prepare step, before the savepoint, and leaves the subscriber's
		// transaction aborted: nothing is applied, and since watermill-sql
		// resends a nacked message in the same transaction, that
		// message's deliveries fail until the subscriber is restarted.
		if opened {
			_ = sp.Rollback(ctx)
		}
		return err
	}
	if dup {
		if err := sp.Commit(ctx); err != nil { // the claim wrote nothing
			return fmt.Errorf("inbox: consumer %q: release savepoint of duplicate %s: %w", ib.cfg.Consumer, key, err)
		}
		ib.duplicate(ctx, msg, key)
		return nil
	}
	if err := ib.run(msg, sp, fn); err != nil {
		_ = sp.Rollback(ctx)
		return err
	}
	if err := sp.Commit(ctx); err != nil {
		return fmt.Errorf("inbox: consumer %q: release savepoint of message %s: %w", ib.cfg.Consumer, key, err)
	}
	ib.m.processed.Add(ctx, 1, ib.m.attrs)
	return nil
}

// claim sends open (the statement opening the message's transaction or
// savepoint) and the claim, INSERT (consumer, key) … ON CONFLICT DO
// NOTHING, in one round trip; opened is true if open succeeded, dup if a
// committed row exists. A claim of a key another transaction has claimed
// but not ended waits for that transaction's end.
func (ib *Inbox) claim(ctx context.Context, db interface {
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}, open, key string) (opened, dup bool, err error) {
	b := &pgx.Batch{}
	b.Queue(open)
	b.Queue(ib.claimSQL, ib.cfg.Consumer, key)
	br := db.SendBatch(ctx, b)
	_, err = br.Exec()
	opened = err == nil
	var tag pgconn.CommandTag
	if err == nil {
		tag, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return opened, false, fmt.Errorf("inbox: consumer %q: claim message %s: %w", ib.cfg.Consumer, key, notMigrated(err, ib.cfg.Schema, "processed"))
	}
	return true, tag.RowsAffected() == 0, nil
}

// run calls fn, turning a panic into ErrHandlerPanic.
func (ib *Inbox) run(msg *message.Message, tx pgx.Tx, fn HandlerFunc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: consumer %q, message %s: %v", ErrHandlerPanic, ib.cfg.Consumer, msg.UUID, r)
		}
	}()
	return fn(msg, tx)
}

func (ib *Inbox) duplicate(ctx context.Context, msg *message.Message, key string) {
	ib.m.duplicates.Add(ctx, 1, ib.m.attrs)
	trace.SpanFromContext(ctx).SetAttributes(attribute.Bool(AttrDuplicate, true), attribute.String(AttrConsumer, ib.cfg.Consumer))
	ib.cfg.Logger.Debug("inbox: duplicate suppressed", "consumer", ib.cfg.Consumer, "message_key", key, "message_uuid", msg.UUID)
}

func (ib *Inbox) missingKey(ctx context.Context, msg *message.Message) error {
	what := "an empty message UUID"
	if ib.cfg.KeyMetadata != "" {
		what = fmt.Sprintf("no metadata %q", ib.cfg.KeyMetadata)
	}
	if ib.cfg.MissingKey == MissingKeyDrop {
		ib.m.rejected.Add(ctx, 1, ib.m.attrs)
		ib.cfg.Logger.Warn("inbox: message without key dropped", "consumer", ib.cfg.Consumer, "message_uuid", msg.UUID, "reason", what)
		return nil
	}
	return fmt.Errorf("%w: consumer %q, message %q has %s", ErrMissingKey, ib.cfg.Consumer, msg.UUID, what)
}
