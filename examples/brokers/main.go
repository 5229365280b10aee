// Brokers: the same program relays to any broker; POSTRELAY_BROKER chooses
// it (memory://, postgres://…, amqp://…, nats://…, redis://…, kafka://…).
//
//	POSTRELAY_BROKER=amqp://guest:guest@127.0.0.1:5672/ go run ./examples/brokers
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
	broker := os.Getenv("POSTRELAY_BROKER")
	if broker == "" {
		broker = "memory://?print=true"
	}
	if err := run(context.Background(), os.Stdout, broker, "brokers_example", "examples.brokers", 10, time.Minute); err != nil {
		fmt.Fprintln(os.Stderr, adapters.Redact(err.Error()))
		os.Exit(1)
	}
}

// run relays n records on topic to brokerURL and returns an error saying
// why when they are not all delivered within wait.
func run(ctx context.Context, out io.Writer, brokerURL, schema, topic string, n int, wait time.Duration) error {
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
	pub, err := adapters.NewPublisher(ctx, adapters.Config{URL: brokerURL})
	if err != nil {
		return err
	}
	defer pub.Close()
	eng, err := engine.New(pool, pub, cfg)
	if err != nil {
		return err
	}
	events, unsubscribe := eng.Events(engine.EventDelivered, engine.EventFailed, engine.EventDeadLettered, engine.EventActorRestarted)
	defer unsubscribe()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()

	w := engine.NewWriter(cfg)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		recs := make([]engine.Record, n)
		for i := range recs {
			recs[i] = engine.Record{Topic: topic, Key: fmt.Sprintf("k%d", i%3), Payload: fmt.Appendf(nil, `{"n":%d}`, i)}
		}
		return w.Write(ctx, tx, recs...)
	})
	if err != nil {
		stop()
		<-done
		return err
	}
	delivered, failed := 0, 0
	var lastErr error // the last failed attempt or actor restart: why nothing arrives
	timeout := time.After(wait)
	for delivered < n {
		select {
		case e := <-events:
			switch {
			case e.Kind == engine.EventDelivered && e.Topic == topic:
				delivered++
			case e.Kind == engine.EventFailed, e.Kind == engine.EventDeadLettered, e.Kind == engine.EventActorRestarted:
				failed++
				lastErr = e.Err
			}
		case err := <-done:
			stop()
			return fmt.Errorf("brokers: the relay stopped after %d of %d deliveries: %w", delivered, n, err)
		case <-timeout:
			stop()
			<-done
			if lastErr != nil {
				return fmt.Errorf("brokers: %d of %d delivered within %v; %d failed attempts or restarts, the last: %w", delivered, n, wait, failed, lastErr)
			}
			return fmt.Errorf("brokers: %d of %d delivered within %v, and no attempt failed", delivered, n, wait)
		}
	}
	fmt.Fprintf(out, "relayed %d records to %s\n", delivered, adapters.Redact(brokerURL))
	stop()
	return <-done
}
