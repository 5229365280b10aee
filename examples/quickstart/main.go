// Quickstart: write business rows and outgoing messages in one PostgreSQL
// transaction; the relay publishes the committed messages to a broker (here
// Watermill's in-memory pub/sub, with a subscriber printing them).
//
//	go run ./examples/quickstart   (POSTRELAY_DATABASE_URL, default local PostgreSQL)
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

func main() {
	if err := run(context.Background(), os.Stdout, "quickstart"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func databaseURL() string {
	if u := os.Getenv("POSTRELAY_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func run(ctx context.Context, out io.Writer, schema string) error {
	pool, err := pgxpool.New(ctx, databaseURL())
	if err != nil {
		return err
	}
	defer pool.Close()

	// 1. Create the outbox schema (idempotent).
	cfg := engine.Config{Schema: schema}
	if err := engine.Migrate(ctx, pool, cfg); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+pgx.Identifier{schema, "orders"}.Sanitize()+" (id text PRIMARY KEY, cents int)"); err != nil {
		return err
	}

	// 2. A broker and a consumer.
	broker := adapters.NewMemory(adapters.Config{})
	msgs, err := broker.Subscribe(ctx, "orders.placed")
	if err != nil {
		return err
	}

	// 3. The relay.
	eng, err := engine.New(pool, broker, cfg)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()

	// 4. Business row + outgoing message, one transaction.
	w := engine.NewWriter(cfg)
	for i, cents := range []int{4200, 999, 15000} {
		id := fmt.Sprintf("order-%d", i+1)
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "orders"}.Sanitize()+" VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET cents = EXCLUDED.cents", id, cents); err != nil {
				return err
			}
			return w.Write(ctx, tx, engine.Record{
				Topic: "orders.placed", Key: id,
				Payload: fmt.Appendf(nil, `{"id":%q,"cents":%d}`, id, cents),
			})
		})
		if err != nil {
			stop()
			<-done
			return err
		}
	}

	// 5. The consumer sees them, in order per key.
	timeout := time.After(30 * time.Second)
	for range 3 {
		select {
		case m := <-msgs:
			fmt.Fprintf(out, "received %s key=%s %s\n", m.UUID[:8]+"…", m.Metadata.Get(engine.MetadataKey), m.Payload)
			m.Ack()
		case <-timeout:
			stop()
			<-done
			return fmt.Errorf("quickstart: messages did not arrive within 30s")
		}
	}
	stop()
	return <-done
}
