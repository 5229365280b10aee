package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The baseline: Watermill's forwarder over watermill-sql/v4, the usual Go
// outbox. The application publishes through forwarder.NewPublisher wrapping
// a watermill-sql publisher bound to its transaction; the forwarder
// subscribes to that table (poll interval 10 ms) and publishes to the
// destination publisher.

// forwarderSetup is a forwarder topic table with its cleanup.
type forwarderSetup struct {
	topic   string
	pool    *pgxpool.Pool
	logger  watermill.LoggerAdapter
	cleanup func()
}

func newForwarderSetup(ctx context.Context, pool *pgxpool.Pool) (*forwarderSetup, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	f := &forwarderSetup{topic: "fwd_" + hex.EncodeToString(b[:]), pool: pool, logger: watermill.NopLogger{}}
	f.cleanup = func() {
		c := context.WithoutCancel(ctx)
		_, _ = pool.Exec(c, "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_" + f.topic}.Sanitize())
		_, _ = pool.Exec(c, "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_offsets_" + f.topic}.Sanitize())
	}
	sub, err := f.subscriber()
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Close() }()
	if err := sub.SubscribeInitialize(f.topic); err != nil {
		return nil, fmt.Errorf("initialize forwarder topic: %w", err)
	}
	return f, nil
}

func (f *forwarderSetup) subscriber() (*wsql.Subscriber, error) {
	return wsql.NewSubscriber(wsql.BeginnerFromPgx(f.pool), wsql.SubscriberConfig{
		SchemaAdapter:    wsql.DefaultPostgreSQLSchema{},
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		PollInterval:     10 * time.Millisecond,
		InitializeSchema: true,
	}, f.logger)
}

// publishInTx publishes msgs through the forwarder inside tx.
func (f *forwarderSetup) publishInTx(tx pgx.Tx, topic string, msgs ...*message.Message) error {
	pub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, f.logger)
	if err != nil {
		return err
	}
	return forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: f.topic}).Publish(topic, msgs...)
}

// run starts the forwarder publishing to out until ctx ends.
func (f *forwarderSetup) run(ctx context.Context, out message.Publisher) (stop func(), err error) {
	sub, err := f.subscriber()
	if err != nil {
		return nil, err
	}
	fw, err := forwarder.NewForwarder(sub, out, f.logger, forwarder.Config{ForwarderTopic: f.topic, CloseTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = fw.Run(ctx)
	}()
	return func() {
		_ = fw.Close()
		<-done
		_ = sub.Close()
	}, nil
}

// countingPublisher counts messages (after an optional simulated delay) and
// signals when a target is reached.
type countingPublisher struct {
	delay  time.Duration
	mu     sync.Mutex
	n      int
	target int
	done   chan struct{}
	onMsg  func(*message.Message)
}

func newCountingPublisher(target int, delay time.Duration) *countingPublisher {
	return &countingPublisher{delay: delay, target: target, done: make(chan struct{})}
}

func (c *countingPublisher) Publish(_ string, msgs ...*message.Message) error {
	if c.delay > 0 {
		time.Sleep(c.delay) // simulated broker round trip
	}
	for _, m := range msgs {
		if c.onMsg != nil {
			c.onMsg(m)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.n
	c.n += len(msgs)
	if before < c.target && c.n >= c.target {
		close(c.done)
	}
	return nil
}

func (c *countingPublisher) Close() error { return nil }

// forwarderDrain preloads records through the forwarder and times the
// forwarder draining them. With a publish delay it drains fewer records
// (it is sequential) and reports the rate.
func forwarderDrain(ctx context.Context, pool *pgxpool.Pool, o options, out io.Writer) (float64, error) {
	f, err := newForwarderSetup(ctx, pool)
	if err != nil {
		return 0, err
	}
	defer f.cleanup()
	n := o.records
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	payload := []byte(`{"order_id":123456,"amount_cents":4200,"currency":"EUR","status":"paid"}`)
	for i := 0; i < n; i += 1000 {
		msgs := make([]*message.Message, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			msgs = append(msgs, message.NewMessage(watermill.NewUUID(), payload))
		}
		if err := f.publishInTx(tx, "bench.orders", msgs...); err != nil {
			_ = tx.Rollback(ctx)
			return 0, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	cp := newCountingPublisher(n, o.publishDelay)
	start := time.Now()
	stop, err := f.run(ctx, cp)
	if err != nil {
		return 0, err
	}
	defer stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-cp.done:
			return time.Since(start).Seconds(), nil
		case <-tick.C:
			cp.mu.Lock()
			c := cp.n
			cp.mu.Unlock()
			fmt.Fprintf(out, "  … forwarder: %d/%d (%.0f rec/s)\n", c, n, float64(c)/time.Since(start).Seconds())
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
