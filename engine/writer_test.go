package engine_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

type nopPublisher struct{}

func (nopPublisher) Publish(string, ...*message.Message) error { return nil }
func (nopPublisher) Close() error                              { return nil }

func TestWriterWorksWithDatabaseSQLTx(t *testing.T) {
	t.Parallel()
	b := setup(t)
	db, err := sql.Open("pgx", pgtest.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	_ = stdlib.GetDefaultDriver()
	ctx := context.Background()

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, b.writer.Write(ctx, engine.SQLTx(tx), rec("t", "a", 1), rec("t", "b", 2),
		engine.Record{Topic: "t", Key: "a", Payload: []byte{}, Metadata: map[string]string{"m": "v"}, DeliverAfter: time.Millisecond}))
	require.NoError(t, tx.Commit())

	tx, err = db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, b.writer.Write(ctx, engine.SQLTx(tx), rec("t", "rolled", 3)))
	require.NoError(t, tx.Rollback())
	require.Equal(t, 3, count(t, b, "records"))

	start(t, b, b.cfg, b.pub)
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 3 }))
	for _, d := range b.pub.Deliveries() {
		require.NotEqual(t, "rolled", d.Key)
	}
}

func TestWriterBulkCopyKeepsOrderAndDelays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const n = 3000
	recs := make([]engine.Record, n)
	for i := range recs {
		recs[i] = engine.Record{Topic: "bulk", Key: fmt.Sprintf("k%d", i%37), Payload: fmt.Appendf(nil, "%d", i)}
	}
	recs[10].DeliverAfter = 300 * time.Millisecond // copy path converts the delay with the tx clock
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, b.writer.Write(ctx, tx, recs...))
	var held int
	require.NoError(t, tx.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{b.cfg.Schema, "records"}.Sanitize()+
		" WHERE available_at > now() + interval '200 milliseconds'").Scan(&held))
	require.Equal(t, 1, held)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, n, count(t, b, "records"))

	start(t, b, b.cfg, b.pub)
	require.NoError(t, b.pub.WaitFor(30*time.Second, func(ds []recorder.Delivery) bool { return len(ds) >= n }))
	ds := b.pub.Deliveries()
	require.NoError(t, recorder.CheckKeyOrder(ds))
	require.Len(t, recorder.UniqueUUIDs(ds), n)
}

func TestWriterNeedsMigratedSchema(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	err = engine.NewWriter(engine.Config{Schema: schema}).Write(ctx, tx, rec("t", "k", 1))
	require.ErrorContains(t, err, "is it migrated?")
	require.ErrorContains(t, err, schema)
}

func TestUnreachableDatabaseFailsRunWithAClearError(t *testing.T) {
	t.Parallel()
	pool := unreachablePool(t)
	eng, err := engine.New(pool, nopPublisher{}, engine.Config{})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = eng.Run(ctx)
	require.Error(t, err)
	require.ErrorContains(t, err, "127.0.0.1")
}

// Payloads of every size up to MaxPayloadBytes are written byte for byte
// and read back the same; one byte more is a clear error.
func FuzzPayloadSizes(f *testing.F) {
	pool, schema := pgtest.FreshSchema(f)
	cfg := engine.Config{Schema: schema, Partitions: 2, MaxPayloadBytes: 1 << 16}
	require.NoError(f, engine.Migrate(context.Background(), pool, cfg))
	w := engine.NewWriter(cfg)
	for _, n := range []int{0, 1, 255, 4096, 1<<16 - 1, 1 << 16, 1<<16 + 1} {
		f.Add(n, byte(7))
	}
	f.Fuzz(func(t *testing.T, n int, fill byte) {
		if n < 0 || n > 1<<17 {
			t.Skip("size outside the fuzzed range")
		}
		ctx := context.Background()
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = fill + byte(i)
		}
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		err = w.Write(ctx, tx, engine.Record{Topic: "t", Key: "k", Payload: payload, MessageID: "p"})
		if n > cfg.MaxPayloadBytes {
			require.ErrorContains(t, err, fmt.Sprintf("payload is %d bytes, more than MaxPayloadBytes", n))
			return
		}
		require.NoError(t, err)
		var got []byte
		require.NoError(t, tx.QueryRow(ctx, "SELECT payload FROM "+pgx.Identifier{schema, "records"}.Sanitize()+" WHERE message_id = 'p'").Scan(&got))
		require.Equal(t, payload, got)
	})
}

// QueueWrite puts the outbox INSERT in the caller's pgx.Batch: business
// write and record travel in one round trip and commit or roll back
// together.
func TestQueueWriteInTheCallersBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	orders := pgx.Identifier{b.cfg.Schema, "orders"}.Sanitize()
	_, err := b.pool.Exec(ctx, "CREATE TABLE "+orders+" (id text PRIMARY KEY)")
	require.NoError(t, err)
	for i, commit := range []bool{true, false, true} {
		tx, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		batch := &pgx.Batch{}
		batch.Queue("INSERT INTO "+orders+" (id) VALUES ($1)", fmt.Sprint("o", i))
		require.NoError(t, b.writer.QueueWrite(ctx, tx, batch, engine.Record{Topic: "t", Key: "k", Payload: []byte{byte(i)}, MessageID: fmt.Sprint("q", i)}))
		require.NoError(t, tx.SendBatch(ctx, batch).Close())
		if commit {
			require.NoError(t, tx.Commit(ctx))
		} else {
			require.NoError(t, tx.Rollback(ctx))
		}
	}
	start(t, b, b.cfg, b.pub)
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 2 }))
	got := recorder.UniqueUUIDs(b.pub.Deliveries())
	require.Equal(t, map[string]int{"q0": 1, "q2": 1}, got)
	require.Equal(t, 2, count(t, b, "orders"))
}

// What Writer.Write takes is checked by the compiler: a pgx.Tx, or SQLTx of
// a *sql.Tx (a string or a *sql.DB no longer compiles). A nil transaction,
// of either kind, is refused with ErrUnsupportedTx.
var (
	_ engine.Tx = pgx.Tx(nil)
	_ engine.Tx = engine.SQLTx(nil)
	_ engine.Tx = (*pgxpool.Conn)(nil)
)

func TestWriterRefusesANilTx(t *testing.T) {
	t.Parallel()
	w := engine.NewWriter(engine.Config{})
	ctx := context.Background()
	var nilSQL *sql.Tx
	require.Nil(t, engine.SQLTx(nilSQL))
	err := w.Write(ctx, engine.SQLTx(nilSQL), rec("t", "k", 1))
	require.ErrorIs(t, err, engine.ErrUnsupportedTx)
	require.ErrorContains(t, err, "tx is nil")
	var nilPgx pgx.Tx
	require.ErrorIs(t, w.Write(ctx, nilPgx, rec("t", "k", 1)), engine.ErrUnsupportedTx)
}
