// Router: a Watermill router consumes orders from a watermill-sql topic and,
// in the consumed message's own transaction, stores the order and writes
// the outgoing "orders.confirmed" message to the outbox; postrelay relays
// it to the broker, where a second handler prints it. Consume → write →
// produce is one transaction.
//
//	go run ./examples/router
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

func main() {
	if err := run(context.Background(), os.Stdout, "router_example", "router_example_orders"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, schema, inTopic string) error {
	dbURL := os.Getenv("POSTRELAY_DATABASE_URL")
	if dbURL == "" {
		dbURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	cfg := engine.Config{Schema: schema}
	if err := engine.Migrate(ctx, pool, cfg); err != nil {
		return err
	}
	orders := pgx.Identifier{schema, "orders"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+orders+" (id text PRIMARY KEY)"); err != nil {
		return err
	}
	logger := watermill.NopLogger{}

	// Incoming orders: a watermill-sql topic, one message per transaction.
	sqlSchema := adapters.SQLSchema(adapters.Config{})
	sqlSchema.SubscribeBatchSize = 1
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		SchemaAdapter: sqlSchema, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true, PollInterval: 10 * time.Millisecond, ConsumerGroup: "router_example",
	}, logger)
	if err != nil {
		return err
	}
	defer sub.Close()
	in, err := wsql.NewPublisher(wsql.BeginnerFromPgx(pool), wsql.PublisherConfig{SchemaAdapter: sqlSchema, AutoInitializeSchema: true}, logger)
	if err != nil {
		return err
	}
	defer in.Close()

	broker := adapters.NewMemory(adapters.Config{})
	confirmed := make(chan string, 10)
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	w := engine.NewWriter(cfg)
	router.AddConsumerHandler("confirm-order", inTopic, sub,
		adapters.TxHandler(pool, w, func(msg *message.Message, tx pgx.Tx, outbox message.Publisher) error {
			id := string(msg.Payload)
			if _, err := tx.Exec(msg.Context(), "INSERT INTO "+orders+" (id) VALUES ($1) ON CONFLICT DO NOTHING", id); err != nil {
				return err
			}
			m := message.NewMessage(watermill.NewUUID(), []byte(id+" confirmed"))
			m.Metadata.Set(engine.MetadataKey, id)
			m.SetContext(msg.Context())
			return outbox.Publish("orders.confirmed", m)
		}))
	router.AddConsumerHandler("print-confirmation", "orders.confirmed", broker, func(msg *message.Message) error {
		confirmed <- string(msg.Payload)
		return nil
	})

	eng, err := engine.New(pool, broker, cfg)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	engDone := make(chan error, 1)
	go func() { engDone <- eng.Run(runCtx) }()
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(runCtx) }()
	<-router.Running()

	for i := 1; i <= 3; i++ {
		if err := in.Publish(inTopic, message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "order-%d", i))); err != nil {
			return err
		}
	}
	timeout := time.After(30 * time.Second)
	for range 3 {
		select {
		case c := <-confirmed:
			fmt.Fprintln(out, "broker received:", c)
		case <-timeout:
			return fmt.Errorf("router: confirmations did not arrive within 30s")
		}
	}
	stop()
	<-routerDone
	return <-engDone
}
