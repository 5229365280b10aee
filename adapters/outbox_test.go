package adapters_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestTxPublisherKeepsTheMessageExactly(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	cfg := engine.Config{Schema: schema, Partitions: 4}
	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	msg := message.NewMessage("0b7f3c9e-uuid", []byte{0, 1, 2})
	msg.Metadata.Set("postrelay_key", "acct-1")
	msg.Metadata.Set("tenant", "acme")
	require.NoError(t, adapters.NewTxPublisher(tx, engine.NewWriter(cfg)).Publish("payments", msg))
	require.NoError(t, tx.Commit(ctx))
	var topic, key, id, tenant string
	var payload []byte
	require.NoError(t, pool.QueryRow(ctx, "SELECT topic, key, message_id, payload, metadata->>'tenant' FROM "+
		pgx.Identifier{schema, "records"}.Sanitize()).Scan(&topic, &key, &id, &payload, &tenant))
	require.Equal(t, []any{"payments", "acct-1", "0b7f3c9e-uuid", []byte{0, 1, 2}, "acme"}, []any{topic, key, id, payload, tenant})
}

// A router consumes from a watermill-sql topic; the handler writes a
// business row and an outgoing message in the subscriber's own transaction.
// A handler error rolls both back and the message comes again: every input
// yields exactly one business row and one outgoing record.
func TestTxHandlerMakesConsumeWriteProduceAtomic(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	cfg := engine.Config{Schema: schema, Partitions: 4}
	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	orders := pgx.Identifier{schema, "orders"}.Sanitize()
	_, err := pool.Exec(ctx, "CREATE TABLE "+orders+" (id text PRIMARY KEY)")
	require.NoError(t, err)
	in := adaptertest.Topic("in")
	t.Cleanup(func() {
		_, _ = pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_" + in}.Sanitize())
		_, _ = pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_offsets_" + in}.Sanitize())
	})

	logger := watermill.NopLogger{}
	schemaAdapter := adapters.SQLSchema(adapters.Config{})
	schemaAdapter.SubscribeBatchSize = 1 // one message per subscriber transaction
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		SchemaAdapter: schemaAdapter, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true, PollInterval: 10 * time.Millisecond, ResendInterval: 10 * time.Millisecond,
	}, logger)
	require.NoError(t, err)
	inPub, err := wsql.NewPublisher(wsql.BeginnerFromPgx(pool), wsql.PublisherConfig{SchemaAdapter: schemaAdapter, AutoInitializeSchema: true}, logger)
	require.NoError(t, err)

	var mu sync.Mutex
	attempts := map[string]int{}
	handled := make(chan string, 100)
	w := engine.NewWriter(cfg)
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	require.NoError(t, err)
	router.AddConsumerHandler("orders", in, sub, adapters.TxHandler(pool, w, func(msg *message.Message, tx pgx.Tx, out message.Publisher) error {
		id := string(msg.Payload)
		if _, err := tx.Exec(msg.Context(), "INSERT INTO "+orders+" (id) VALUES ($1)", id); err != nil {
			return err
		}
		outMsg := message.NewMessage(watermill.NewUUID(), []byte("shipped "+id))
		outMsg.Metadata.Set("postrelay_key", id)
		if err := out.Publish("orders.shipped", outMsg); err != nil {
			return err
		}
		mu.Lock()
		attempts[id]++
		n := attempts[id]
		mu.Unlock()
		if id == "order-3" && n == 1 {
			return errors.New("handler fails after writing: all of it must roll back")
		}
		handled <- id
		return nil
	}))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = sub.Close()
		_ = inPub.Close()
	})
	<-router.Running()
	for i := range 5 {
		require.NoError(t, inPub.Publish(in, message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "order-%d", i))))
	}
	seen := map[string]bool{}
	timeout := time.After(30 * time.Second)
	for len(seen) < 5 {
		select {
		case id := <-handled:
			seen[id] = true
		case <-timeout:
			mu.Lock()
			t.Fatalf("handled %v, attempts %v", seen, attempts)
		}
	}
	mu.Lock()
	require.Equal(t, 2, attempts["order-3"])
	mu.Unlock()
	// The subscriber commits after the ack; wait for the rows.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var rows, recs int
		require.NoError(t, pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+orders+"), (SELECT count(*) FROM "+
			pgx.Identifier{schema, "records"}.Sanitize()+")").Scan(&rows, &recs))
		if rows == 5 && recs == 5 {
			break
		}
		require.True(t, time.Now().Before(deadline), "rows %d records %d", rows, recs)
		<-time.After(20 * time.Millisecond) // poll again
	}
}
