package inbox_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/postrelay/postrelay/adapters/inbox"
	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestInboxConfigValidate(t *testing.T) {
	t.Parallel()
	ok := inbox.Config{Consumer: "billing"}.WithDefaults()
	require.NoError(t, ok.Validate())
	require.Equal(t, "postrelay_inbox", ok.Schema)
	require.Equal(t, 7*24*time.Hour, ok.Retention)
	require.Equal(t, inbox.MissingKeyNack, ok.MissingKey)
	for _, tc := range []struct {
		name  string
		cfg   inbox.Config
		field string
	}{
		{"empty consumer", inbox.Config{}, `Consumer = ""`},
		{"consumer with space", inbox.Config{Consumer: "a b"}, `Consumer = "a b"`},
		{"bad schema", inbox.Config{Consumer: "c", Schema: "Bad-Schema"}, `Schema = "Bad-Schema"`},
		{"short retention", inbox.Config{Consumer: "c", Retention: time.Millisecond}, "Retention = 1ms"},
		{"bad policy", inbox.Config{Consumer: "c", MissingKey: "ignore"}, `MissingKey = "ignore"`},
		{"bad batch", inbox.Config{Consumer: "c", PurgeBatch: -1}, "PurgeBatch = -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.WithDefaults().Validate()
			require.ErrorIs(t, err, inbox.ErrInvalidConfig)
			require.Contains(t, err.Error(), tc.field)
		})
	}
	// New refuses a bad config before touching the database.
	_, err := inbox.New(context.Background(), nil, inbox.Config{})
	require.ErrorIs(t, err, inbox.ErrInvalidConfig)
}

func TestInboxMigrateConcurrentAndIdempotent(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- inbox.Migrate(ctx, pool, schema) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, inbox.Migrate(ctx, pool, schema))
	var version, rows int
	require.NoError(t, pool.QueryRow(ctx, "SELECT max(version), count(*) FROM "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&version, &rows))
	require.Equal(t, inbox.SchemaVersion(), version)
	require.Equal(t, len(inbox.Migrations()), rows)
	require.Contains(t, inbox.Migrations()[0].Render(schema), `"`+schema+`".processed`)

	require.ErrorIs(t, inbox.Migrate(ctx, pool, `x"; DROP TABLE y; --`), inbox.ErrInvalidConfig)
}

// Without the migration, New and a claim fail with ErrNotMigrated naming
// the schema, the table and the command to run.
func TestInboxNotMigrated(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	_, err := inbox.New(ctx, pool, inbox.Config{Consumer: "c", Schema: schema})
	require.ErrorIs(t, err, inbox.ErrNotMigrated)
	require.Contains(t, err.Error(), schema+".consumers")
	require.Contains(t, err.Error(), "postrelay inbox migrate --schema "+schema)

	// Migrated, then the processed table is gone: the claim names it.
	require.NoError(t, inbox.Migrate(ctx, pool, schema))
	ib, err := inbox.New(ctx, pool, inbox.Config{Consumer: "c", Schema: schema})
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "DROP TABLE "+pgx.Identifier{schema, "processed"}.Sanitize())
	require.NoError(t, err)
	called := false
	err = ib.Handler(func(*message.Message, pgx.Tx) error { called = true; return nil })(message.NewMessage("m1", nil))
	require.ErrorIs(t, err, inbox.ErrNotMigrated)
	require.Contains(t, err.Error(), schema+".processed")
	require.False(t, called)

	_, err = inbox.PurgeConsumers(ctx, pool, inbox.PurgeParams{Schema: pgtest.NewSchemaName()})
	require.ErrorIs(t, err, inbox.ErrNotMigrated)
}

// A redelivered message is acked without a second effect; the duplicate is
// counted and marked on the message's span.
func TestInboxDuplicateSuppressed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ib := b.inbox(t, inbox.Config{Consumer: "billing"})
	other := b.inbox(t, inbox.Config{Consumer: "shipping"})
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	h := ib.Handler(b.apply("billing"))
	for i := range 3 {
		ctx, span := tp.Tracer("test").Start(context.Background(), "consume")
		msg := message.NewMessage(msgID(t, 1), []byte("x"))
		msg.SetContext(ctx)
		require.NoError(t, h(msg), "delivery %d", i+1)
		span.End()
	}
	require.Equal(t, 1, b.effectCount(t, msgID(t, 1)))
	// Another consumer name applies the same message once for itself.
	require.NoError(t, other.Handler(b.apply("shipping"))(message.NewMessage(msgID(t, 1), nil)))
	require.Equal(t, 2, b.effectCount(t, msgID(t, 1)))

	require.EqualValues(t, 1, b.counter(t, inbox.MetricProcessed, "billing"))
	require.EqualValues(t, 2, b.counter(t, inbox.MetricDuplicates, "billing"))
	require.EqualValues(t, 1, b.counter(t, inbox.MetricProcessed, "shipping"))
	ended := spans.Ended()
	require.Len(t, ended, 3)
	dup := attribute.Key(inbox.AttrDuplicate)
	for i, s := range ended {
		var found bool
		for _, a := range s.Attributes() {
			if a.Key == dup {
				found = a.Value.AsBool()
			}
		}
		require.Equal(t, i > 0, found, "span of delivery %d: %s", i+1, inbox.AttrDuplicate)
	}
}

// waitClaimBlocked waits until a session is waiting on a lock while
// inserting into schema's processed table: the second claimer.
func waitClaimBlocked(t *testing.T, b *bundle) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		require.NoError(t, b.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO "'||$1||'"."processed"%'`, b.schema).Scan(&n))
		if n == 1 {
			return
		}
		require.True(t, time.Now().Before(deadline), "the second claim never waited on the first's row")
		<-time.After(10 * time.Millisecond)
	}
}

// The same message delivered to two consumer instances at once: the second
// claim waits on the first's uncommitted row. If the first commits, the
// second acks a duplicate; if it rolls back, the second applies it. One
// effect either way, and the second does not return before the first ends.
func TestInboxConcurrentDeliveryBlocksSecondClaim(t *testing.T) {
	t.Parallel()
	for _, firstFails := range []bool{false, true} {
		name := "first commits"
		if firstFails {
			name = "first rolls back"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			a := b.inbox(t, inbox.Config{Consumer: "c"})
			bb := b.inbox(t, inbox.Config{Consumer: "c"})
			id := msgID(t, 1)
			entered := make(chan struct{})
			release := make(chan struct{})
			releaseOnce := sync.OnceFunc(func() { close(release) })
			t.Cleanup(releaseOnce) // a failed test still ends the first transaction
			aDone := make(chan error, 1)
			go func() {
				aDone <- a.Handler(func(msg *message.Message, tx pgx.Tx) error {
					if err := b.apply("a")(msg, tx); err != nil {
						return err
					}
					close(entered)
					<-release
					if firstFails {
						return errors.New("a fails after writing")
					}
					return nil
				})(message.NewMessage(id, nil))
			}()
			<-entered
			bDone := make(chan error, 1)
			go func() { bDone <- bb.Handler(b.apply("b"))(message.NewMessage(id, nil)) }()
			waitClaimBlocked(t, b)
			select {
			case err := <-bDone:
				t.Fatalf("second claim returned (%v) before the first transaction ended", err)
			default:
			}
			releaseOnce()
			aErr := <-aDone
			require.NoError(t, <-bDone)
			var by string
			require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT string_agg(by_consumer, ',') FROM "+b.effects).Scan(&by))
			if firstFails {
				require.Error(t, aErr)
				require.Equal(t, "b", by, "the second claimer applies the message after the first rolled back")
				require.EqualValues(t, 0, b.counter(t, inbox.MetricDuplicates, "c"))
			} else {
				require.NoError(t, aErr)
				require.Equal(t, "a", by)
				require.EqualValues(t, 1, b.counter(t, inbox.MetricDuplicates, "c"))
			}
			require.EqualValues(t, 1, b.counter(t, inbox.MetricProcessed, "c"))
		})
	}
}

// A failing handler rolls back its writes and the claim: the redelivery
// applies the message once, later ones are duplicates.
func TestInboxHandlerFailureThenRedelivery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ib := b.inbox(t, inbox.Config{Consumer: "c"})
	attempts := 0
	h := ib.Handler(func(msg *message.Message, tx pgx.Tx) error {
		attempts++
		if err := b.apply("c")(msg, tx); err != nil {
			return err
		}
		if attempts < 3 {
			return errors.New("transient")
		}
		return nil
	})
	id := msgID(t, 1)
	require.Error(t, h(message.NewMessage(id, nil)))
	require.Error(t, h(message.NewMessage(id, nil)))
	require.Equal(t, 0, b.effectCount(t, id))
	require.NoError(t, h(message.NewMessage(id, nil)))
	require.NoError(t, h(message.NewMessage(id, nil)))
	require.Equal(t, 1, b.effectCount(t, id))
	require.Equal(t, 3, attempts, "the duplicate does not run the handler")
}

// A panicking handler: rollback, an error wrapping ErrHandlerPanic (the
// router nacks), and the redelivery applies once.
func TestInboxPanicRollsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ib := b.inbox(t, inbox.Config{Consumer: "c"})
	panicNow := true
	h := ib.Handler(func(msg *message.Message, tx pgx.Tx) error {
		if err := b.apply("c")(msg, tx); err != nil {
			return err
		}
		if panicNow {
			panic("boom")
		}
		return nil
	})
	id := msgID(t, 1)
	err := h(message.NewMessage(id, nil))
	require.ErrorIs(t, err, inbox.ErrHandlerPanic)
	require.Contains(t, err.Error(), "boom")
	require.Equal(t, 0, b.effectCount(t, id))
	var claims int
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{b.schema, "processed"}.Sanitize()).Scan(&claims))
	require.Zero(t, claims, "the claim rolled back with the panic")
	panicNow = false
	require.NoError(t, h(message.NewMessage(id, nil)))
	require.NoError(t, h(message.NewMessage(id, nil)))
	require.Equal(t, 1, b.effectCount(t, id))
}

// KeyMetadata deduplicates by a metadata value; a message without it is
// never applied: nacked (MissingKeyNack) or dropped (MissingKeyDrop).
func TestInboxKeyMetadataAndMissingKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	byKey := func(policy inbox.MissingKeyPolicy, consumer string) message.NoPublishHandlerFunc {
		return b.inbox(t, inbox.Config{Consumer: consumer, KeyMetadata: "event_id", MissingKey: policy}).Handler(b.apply(consumer))
	}
	nack := byKey(inbox.MissingKeyNack, "nack")
	// Two UUIDs, one event id: one effect.
	for _, uuid := range []string{"u1", "u2"} {
		m := message.NewMessage(uuid, nil)
		m.Metadata.Set("event_id", "e1")
		require.NoError(t, nack(m))
	}
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects+" WHERE by_consumer = 'nack'").Scan(&n))
	require.Equal(t, 1, n)

	for range 2 {
		err := nack(message.NewMessage("u3", nil))
		require.ErrorIs(t, err, inbox.ErrMissingKey)
		require.Contains(t, err.Error(), `no metadata "event_id"`)
		require.Contains(t, err.Error(), `"u3"`)
	}
	require.Equal(t, 0, b.effectCount(t, "u3"))

	drop := byKey(inbox.MissingKeyDrop, "drop")
	require.NoError(t, drop(message.NewMessage("u4", nil)))
	require.NoError(t, drop(message.NewMessage("u4", nil)))
	require.Equal(t, 0, b.effectCount(t, "u4"))
	require.EqualValues(t, 2, b.counter(t, inbox.MetricRejected, "drop"))

	// Default key: the UUID; an empty UUID is a missing key.
	def := b.inbox(t, inbox.Config{Consumer: "uuid"}).Handler(b.apply("uuid"))
	err := def(message.NewMessage("", nil))
	require.ErrorIs(t, err, inbox.ErrMissingKey)
	require.Contains(t, err.Error(), "empty message UUID")
}

// Middleware: the wrapped handler finds the transaction in the message
// context; its writes commit with the claim.
func TestInboxMiddleware(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ib := b.inbox(t, inbox.Config{Consumer: "c"})
	h := ib.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		tx, ok := inbox.TxFromContext(msg.Context())
		if !ok {
			return nil, errors.New("no inbox transaction in the context")
		}
		if err := b.apply("c")(msg, tx); err != nil {
			return nil, err
		}
		return []*message.Message{message.NewMessage("follow-up", nil)}, nil
	})
	id := msgID(t, 1)
	out, err := h(message.NewMessage(id, nil))
	require.NoError(t, err)
	require.Len(t, out, 1)
	out, err = h(message.NewMessage(id, nil))
	require.NoError(t, err)
	require.Empty(t, out, "a duplicate produces nothing")
	require.Equal(t, 1, b.effectCount(t, id))
	_, ok := inbox.TxFromContext(context.Background())
	require.False(t, ok)
}

// Purge deletes only ids older than the retention, in batches, and counts
// them; PurgeConsumers names an unknown consumer.
func TestInboxPurge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ib := b.inbox(t, inbox.Config{Consumer: "c", Retention: time.Hour, PurgeBatch: 7})
	processed := pgx.Identifier{b.schema, "processed"}.Sanitize()
	_, err := b.pool.Exec(ctx, "INSERT INTO "+processed+" (consumer, message_id, processed_at) "+
		"SELECT 'c', 'old-'||i, now() - interval '2 hours' FROM generate_series(1, 50) i")
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, "INSERT INTO "+processed+" (consumer, message_id, processed_at) "+
		"SELECT 'c', 'new-'||i, now() - interval '59 minutes' FROM generate_series(1, 5) i")
	require.NoError(t, err)
	n, err := ib.Purge(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 50, n)
	var left int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM "+processed).Scan(&left))
	require.Equal(t, 5, left)
	require.EqualValues(t, 50, b.counter(t, inbox.MetricPurged, "c"))

	// A redelivery of a message still inside the window is suppressed.
	h := ib.Handler(b.apply("c"))
	require.NoError(t, h(message.NewMessage("new-1", nil)))
	require.Equal(t, 0, b.effectCount(t, "new-1"))

	_, err = inbox.PurgeConsumers(ctx, b.pool, inbox.PurgeParams{Schema: b.schema, Consumers: []string{"nobody"}})
	require.ErrorIs(t, err, inbox.ErrUnknownConsumer)
	require.Contains(t, err.Error(), `"nobody"`)
	require.Contains(t, err.Error(), `"c"`)
	got, err := inbox.PurgeConsumers(ctx, b.pool, inbox.PurgeParams{Schema: b.schema, Retention: time.Minute})
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"c": 5}, got)
}

// Run purges on its ticker and stops with its context.
func TestInboxRunPurgesAutomatically(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ib := b.inbox(t, inbox.Config{Consumer: "c", Retention: time.Second, PurgeInterval: 50 * time.Millisecond})
	h := ib.Handler(b.apply("c"))
	for i := range 10 {
		require.NoError(t, h(message.NewMessage(msgID(t, i), nil)))
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ib.Run(runCtx) }()
	deadline := time.Now().Add(15 * time.Second)
	for b.counter(t, inbox.MetricPurged, "c") < 10 {
		require.True(t, time.Now().Before(deadline), "Run did not purge the expired ids")
		<-time.After(20 * time.Millisecond)
	}
	cancel()
	require.NoError(t, <-done)
	var purgedAt *time.Time
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT purged_at FROM "+pgx.Identifier{b.schema, "consumers"}.Sanitize()+" WHERE name = 'c'").Scan(&purgedAt))
	require.NotNil(t, purgedAt)
}

func TestInboxErrorsNameTheConsumer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ib := b.inbox(t, inbox.Config{Consumer: "orders-consumer"})
	err := ib.Handler(func(*message.Message, pgx.Tx) error { return errors.New("business rule") })(message.NewMessage("m", nil))
	require.EqualError(t, err, "business rule")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := message.NewMessage("m2", nil)
	m.SetContext(ctx)
	err = ib.Handler(b.apply("x"))(m)
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), `consumer "orders-consumer"`), err.Error())
}
