package adapters

import (
	"context"
	"errors"
	"fmt"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/engine"
)

// TxPublisher is a Watermill publisher that writes every message as an
// outbox record in one transaction, instead of sending it: code that
// publishes through Watermill switches to the outbox by swapping its
// publisher. Topic, UUID (the record's message id), payload and metadata
// are kept exactly; the record key is the message's postrelay_key metadata,
// or KeyFunc's result, or empty (no ordering).
type TxPublisher struct {
	tx      engine.Tx
	w       *engine.Writer
	keyFunc func(topic string, msg *message.Message) string
}

// NewTxPublisher returns a publisher writing into tx: a pgx.Tx, or
// engine.SQLTx of a *sql.Tx.
func NewTxPublisher(tx engine.Tx, w *engine.Writer) *TxPublisher {
	return &TxPublisher{tx: tx, w: w}
}

// WithKeyFunc sets how the record key is derived from a message that has no
// postrelay_key metadata.
func (p *TxPublisher) WithKeyFunc(f func(topic string, msg *message.Message) string) *TxPublisher {
	p.keyFunc = f
	return p
}

// Publish writes msgs as records of topic, in order, in the transaction.
// The first message's context (msg.Context()) is the write's context, so
// its trace context is stored with the records.
func (p *TxPublisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	recs := make([]engine.Record, len(msgs))
	for i, m := range msgs {
		key := m.Metadata.Get(engine.MetadataKey)
		if key == "" && p.keyFunc != nil {
			key = p.keyFunc(topic, m)
		}
		md := make(map[string]string, len(m.Metadata))
		for k, v := range m.Metadata {
			md[k] = v
		}
		payload := []byte(m.Payload)
		if payload == nil {
			payload = []byte{}
		}
		recs[i] = engine.Record{Topic: topic, Key: key, Payload: payload, Metadata: md, MessageID: m.UUID}
	}
	return p.w.Write(msgs[0].Context(), p.tx, recs...)
}

// Close does nothing: the transaction belongs to the caller.
func (p *TxPublisher) Close() error { return nil }

// TxHandlerFunc is the business logic of a message handler: its writes go
// through tx, its outgoing messages through out (the outbox, in tx).
type TxHandlerFunc func(msg *message.Message, tx pgx.Tx, out message.Publisher) error

// ErrNotPgxTx is returned when a consumed message's transaction (from a
// watermill-sql subscriber) is not a pgx transaction.
var ErrNotPgxTx = errors.New("adapters: the consumed message's transaction is not a pgx transaction (use watermill-sql's BeginnerFromPgx)")

// ConsumedTx returns the transaction a watermill-sql subscriber consumed the
// message of ctx in (ok false when there is none), or ErrNotPgxTx when that
// transaction is not a pgx one.
func ConsumedTx(ctx context.Context) (tx pgx.Tx, ok bool, err error) {
	stx, ok := wsql.TxFromContext(ctx)
	if !ok {
		return nil, false, nil
	}
	switch t := stx.(type) {
	case *wsql.PgxTx:
		return t.Tx, true, nil
	case wsql.PgxTx:
		return t.Tx, true, nil
	}
	return nil, false, fmt.Errorf("%w: got %T", ErrNotPgxTx, stx)
}

// TxHandler adapts fn to a Watermill handler in which consuming the
// message, the business writes and the outgoing messages are one
// transaction:
//
//   - if the message came from a watermill-sql subscriber built with
//     BeginnerFromPgx, fn runs in the subscriber's own transaction, which
//     commits when the handler returns nil and the message is acked; fn runs
//     under a savepoint, so an error undoes its writes and records before
//     the subscriber redelivers the message — consume → write → produce is
//     atomic. Give that subscriber's schema adapter
//     SubscribeBatchSize 1, so each message has a transaction of its own;
//   - otherwise TxHandler begins a transaction on pool and commits it when
//     fn returns nil (rolls back on an error, and the router nacks).
func TxHandler(pool *pgxpool.Pool, w *engine.Writer, fn TxHandlerFunc) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ctx := msg.Context()
		if tx, ok, err := ConsumedTx(ctx); err != nil {
			return err
		} else if ok {
			// The subscriber redelivers a nacked message in the same
			// transaction: a savepoint undoes the failed attempt's writes
			// and records.
			return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
				return fn(msg, sp, NewTxPublisher(sp, w))
			})
		}
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			// The subscriber redelivers a nacked message in the same
			// transaction: a savepoint undoes the failed attempt's writes
			// and records.
			return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
				return fn(msg, sp, NewTxPublisher(sp, w))
			})
		})
	}
}

var _ message.Publisher = (*TxPublisher)(nil)
