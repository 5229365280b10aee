// Inbox: a consumer process that applies each message exactly once. Orders
// arrive from a broker; in ONE PostgreSQL transaction the inbox claims the
// message, the handler writes the business row and the follow-up
// "<topic>.applied" record through the outbox, and the transaction commits
// before the ack. A redelivered order (a relay or a consumer crashed, the
// broker redelivered) is acked without a second effect.
//
//	go run ./examples/inbox
//
// runs a demo against the local PostgreSQL with an in-memory broker: every
// order is published twice and applied once. With --broker it is a
// long-running consumer of a real broker (nats:// JetStream with a durable
// queue group and one message in flight, or kafka:// with a consumer
// group) until SIGTERM:
//
//	go run ./examples/inbox --broker nats://127.0.0.1:4222 --topic orders --consumer billing
//
// Payloads are JSON {"key": "...", "seq": n}. A message with seq > 0 is
// applied only after seq-1 of its key (per-key order of effects across
// parallel consumers); an early one is nacked and redelivered.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/adapters/inbox"
	"github.com/postrelay/postrelay/engine"
)

// DieAfterCommitEnv, set to N, makes the consumer SIGKILL itself right
// after its Nth commit, before the ack (for crash tests).
const DieAfterCommitEnv = "POSTRELAY_INBOX_EXAMPLE_DIE_AFTER_COMMIT"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "inbox example:", err)
		stop()
		os.Exit(1)
	}
}

type options struct {
	databaseURL  string
	broker       string
	topic        string
	consumer     string
	instance     string
	inboxSchema  string
	outboxSchema string
	table        string
	orders       int
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.databaseURL, "database-url", envOr("POSTRELAY_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL")
	fs.StringVar(&o.broker, "broker", "", "nats://… or kafka://host:port; empty: the in-memory demo")
	fs.StringVar(&o.topic, "topic", "inbox_example_orders", "topic consumed")
	fs.StringVar(&o.consumer, "consumer", "inbox_example", "inbox consumer name (and broker consumer group)")
	fs.StringVar(&o.instance, "instance", "", "this process's name, recorded with each effect")
	fs.StringVar(&o.inboxSchema, "inbox-schema", inbox.SchemaDefault, "schema of the inbox tables")
	fs.StringVar(&o.outboxSchema, "outbox-schema", "inbox_example_outbox", "postrelay schema of the follow-up records")
	fs.StringVar(&o.table, "table", "orders_applied", "business table (in the inbox schema)")
	fs.IntVar(&o.orders, "orders", 4, "demo: orders to publish (each twice)")
	logLevel := fs.String("log-level", "info", "debug logs each duplicate the inbox suppresses")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", *logLevel, err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	pool, err := pgxpool.New(ctx, o.databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := setup(ctx, pool, o); err != nil {
		return err
	}
	ocfg := engine.Config{Schema: o.outboxSchema}
	ib, err := inbox.New(ctx, pool, inbox.Config{Consumer: o.consumer, Schema: o.inboxSchema, Logger: logger})
	if err != nil {
		return err
	}
	h := &handler{
		table: pgx.Identifier{o.inboxSchema, o.table}.Sanitize(), keys: pgx.Identifier{o.inboxSchema, o.table + "_keys"}.Sanitize(),
		topic: o.topic, w: engine.NewWriter(ocfg), instance: o.instance, logger: logger,
	}
	if n, err := strconv.Atoi(os.Getenv(DieAfterCommitEnv)); err == nil && n > 0 {
		h.dieAfter = int64(n)
	}

	var sub message.Subscriber
	var demo *adapters.Memory
	switch {
	case o.broker == "":
		demo = adapters.NewMemory(adapters.Config{})
		sub = demo
	case strings.HasPrefix(o.broker, "nats://"):
		sub, err = wnats.NewSubscriber(wnats.SubscriberConfig{
			URL:              o.broker,
			QueueGroupPrefix: o.consumer,
			SubscribersCount: 1,
			AckWaitTimeout:   2 * time.Second,
			CloseTimeout:     5 * time.Second,
			NakDelay:         wnats.NewStaticDelay(50 * time.Millisecond),
			Unmarshaler:      &wnats.NATSMarshaler{},
			// One message in flight for the whole durable consumer: every
			// instance sees the stream in order, and an unacked message is
			// redelivered (after AckWaitTimeout) before any later one.
			JetStream: wnats.JetStreamConfig{AutoProvision: false, DurablePrefix: o.consumer,
				SubscribeOptions: []nats.SubOpt{nats.MaxAckPending(1), nats.AckExplicit(), nats.AckWait(2 * time.Second)},
				// A lost ack is a redelivery the inbox suppresses.
				AckAsync: true},
		}, watermill.NewSlogLogger(logger.With("component", "nats")))
	case strings.HasPrefix(o.broker, "kafka://"):
		sc := kafka.DefaultSaramaSubscriberConfig()
		sc.Consumer.Offsets.Initial = sarama.OffsetOldest
		sc.Consumer.Group.Session.Timeout = 2 * time.Second
		sc.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
		sc.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
		sub, err = kafka.NewSubscriber(kafka.SubscriberConfig{
			Brokers:               strings.Split(strings.TrimPrefix(o.broker, "kafka://"), ","),
			Unmarshaler:           adapters.KafkaMarshaler(),
			ConsumerGroup:         o.consumer,
			NackResendSleep:       50 * time.Millisecond,
			OverwriteSaramaConfig: sc,
		}, watermill.NewSlogLogger(logger.With("component", "kafka")))
	default:
		return fmt.Errorf("--broker %q: want nats://… or kafka://…", o.broker)
	}
	if err != nil {
		return err
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	router.AddConsumerHandler("apply-order", o.topic, sub, h.wrap(ib.Handler(h.apply)))

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	purgeDone := make(chan error, 1)
	go func() { purgeDone <- ib.Run(runCtx) }()
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(runCtx) }()
	select {
	case <-router.Running():
	case err := <-routerDone:
		cancel()
		<-purgeDone
		return fmt.Errorf("router: %w", err)
	}
	logger.Info("inbox example: consuming", "topic", o.topic, "consumer", o.consumer, "broker", adapters.Redact(o.broker))

	if demo != nil {
		err = runDemo(ctx, pool, demo, h, o, stdout)
		cancel()
	} else {
		<-ctx.Done()
	}
	cancel()
	rerr := <-routerDone
	perr := <-purgeDone
	return errors.Join(err, rerr, perr, sub.Close())
}

// setup migrates the inbox and outbox schemas and creates the business
// table, under an advisory lock (two consumers start at once).
func setup(ctx context.Context, pool *pgxpool.Pool, o options) error {
	if err := inbox.Migrate(ctx, pool, o.inboxSchema); err != nil {
		return err
	}
	if err := engine.Migrate(ctx, pool, engine.Config{Schema: o.outboxSchema}); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('postrelay.inbox.example'), hashtext($1))", o.inboxSchema); err != nil {
			return err
		}
		for _, s := range []string{
			// No unique constraint on message_id: a message applied twice
			// would show as two rows.
			"CREATE TABLE IF NOT EXISTS " + pgx.Identifier{o.inboxSchema, o.table}.Sanitize() + ` (
				n          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
				message_id text NOT NULL,
				key        text NOT NULL,
				seq        bigint NOT NULL,
				instance   text NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now())`,
			"CREATE TABLE IF NOT EXISTS " + pgx.Identifier{o.inboxSchema, o.table + "_keys"}.Sanitize() +
				" (key text PRIMARY KEY, last_seq bigint NOT NULL)",
		} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
}

// order is a message's payload.
type order struct {
	Key string `json:"key"`
	Seq int64  `json:"seq"`
}

// errOutOfOrder nacks an order whose key's previous order is not applied
// yet; the broker redelivers it.
var errOutOfOrder = errors.New("order is not the next of its key")

type handler struct {
	table, keys string
	topic       string
	w           *engine.Writer
	instance    string
	logger      *slog.Logger
	deliveries  atomic.Int64 // handler calls
	applied     atomic.Int64 // effects committed (apply returned nil)
	commits     atomic.Int64 // handler calls that returned nil
	dieAfter    int64
}

// apply is the business logic; it runs in the inbox's transaction: the
// business row and the follow-up record commit with the claim, or not at
// all.
func (h *handler) apply(msg *message.Message, tx pgx.Tx) error {
	ctx := msg.Context()
	var o order
	if err := json.Unmarshal(msg.Payload, &o); err != nil {
		return fmt.Errorf("order %s: payload %q: %w", msg.UUID, msg.Payload, err)
	}
	if o.Seq > 0 {
		// Lock the key's row (applications of one key serialize here) and
		// apply only its next order.
		var last int64
		if err := tx.QueryRow(ctx, "INSERT INTO "+h.keys+" (key, last_seq) VALUES ($1, 0) "+
			"ON CONFLICT (key) DO UPDATE SET last_seq = "+h.keys+".last_seq RETURNING last_seq", o.Key).Scan(&last); err != nil {
			return err
		}
		if o.Seq != last+1 {
			return fmt.Errorf("%w: key %q order %d, last applied %d", errOutOfOrder, o.Key, o.Seq, last)
		}
		if _, err := tx.Exec(ctx, "UPDATE "+h.keys+" SET last_seq = $2 WHERE key = $1", o.Key, o.Seq); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+h.table+" (message_id, key, seq, instance) VALUES ($1, $2, $3, $4)",
		msg.UUID, o.Key, o.Seq, h.instance); err != nil {
		return err
	}
	// The follow-up message goes through the outbox, in the same
	// transaction: it exists iff this order's effects committed.
	out := message.NewMessage("applied-"+msg.UUID, msg.Payload)
	out.Metadata.Set(engine.MetadataKey, o.Key)
	out.SetContext(ctx)
	if err := adapters.NewTxPublisher(tx, h.w).Publish(h.topic+".applied", out); err != nil {
		return err
	}
	h.applied.Add(1)
	return nil
}

// wrap counts deliveries and, with DieAfterCommitEnv, kills the process
// after the Nth commit and before the router acks (a crash between commit
// and ack: the broker redelivers a message whose effects are committed).
func (h *handler) wrap(next message.NoPublishHandlerFunc) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		h.deliveries.Add(1)
		err := next(msg)
		if err != nil {
			if !errors.Is(err, errOutOfOrder) {
				h.logger.Warn("inbox example: nack", "message_uuid", msg.UUID, "err", err)
			}
			return err
		}
		if n := h.commits.Add(1); h.dieAfter > 0 && n == h.dieAfter {
			h.logger.Warn("inbox example: SIGKILL after commit, before ack", "message_uuid", msg.UUID, "commits", n)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		return nil
	}
}

// runDemo publishes o.orders orders, each twice, to the in-memory broker
// and prints what was applied.
func runDemo(ctx context.Context, pool *pgxpool.Pool, broker *adapters.Memory, h *handler, o options, out io.Writer) error {
	run := watermill.NewShortUUID()
	published := make(chan error, 1)
	go func() {
		for i := 1; i <= o.orders; i++ {
			payload := fmt.Appendf(nil, `{"key":"customer-%s-%d","seq":%d}`, run, i%2, (i+1)/2)
			id := fmt.Sprintf("order-%s-%d", run, i)
			for range 2 { // the second copy is a broker duplicate
				if err := broker.Publish(o.topic, message.NewMessage(id, payload)); err != nil {
					published <- err
					return
				}
			}
		}
		published <- nil
	}()
	select {
	case err := <-published: // memory:// returns once the subscriber acked
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	rows, err := pool.Query(ctx, "SELECT message_id, key, seq FROM "+h.table+" WHERE message_id LIKE $1 ORDER BY n", "order-"+run+"-%")
	if err != nil {
		return err
	}
	var id, key string
	var seq int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &key, &seq}, func() error {
		fmt.Fprintf(out, "applied %s (key %s, order %d)\n", strings.TrimPrefix(id, "order-"+run+"-"), strings.TrimPrefix(key, "customer-"+run+"-"), seq)
		return nil
	}); err != nil {
		return err
	}
	var followUps int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{o.outboxSchema, "records"}.Sanitize()+
		" WHERE message_id LIKE $1", "applied-order-"+run+"-%").Scan(&followUps); err != nil {
		return err
	}
	d, a := h.deliveries.Load(), h.applied.Load()
	fmt.Fprintf(out, "deliveries: %d, applied: %d, duplicates suppressed: %d\n", d, a, d-a)
	fmt.Fprintf(out, "follow-up records in the outbox: %d\n", followUps)
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
