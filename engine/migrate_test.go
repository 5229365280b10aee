package engine_test

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

func TestMigrateConcurrentlyIsSafeAndIdempotent(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	cfg := engine.Config{Schema: schema, Partitions: 32}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = engine.Migrate(context.Background(), pool, cfg) })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "migrator %d", i)
	}
	require.NoError(t, engine.Migrate(context.Background(), pool, cfg))
	var versions, partitions int
	require.NoError(t, pool.QueryRow(context.Background(),
		"SELECT count(*) FROM "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&versions))
	require.Equal(t, len(engine.Migrations()), versions)
	require.NoError(t, pool.QueryRow(context.Background(),
		"SELECT count(*) FROM "+pgx.Identifier{schema, "partitions"}.Sanitize()).Scan(&partitions))
	require.Equal(t, 32, partitions)
}

func TestMigrateRefusesOtherPartitionCountAndNewerSchema(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	require.NoError(t, engine.Migrate(ctx, pool, engine.Config{Schema: schema, Partitions: 8}))

	err := engine.Migrate(ctx, pool, engine.Config{Schema: schema, Partitions: 64})
	require.ErrorIs(t, err, engine.ErrPartitionsMismatch)
	require.ErrorContains(t, err, "has 8 partitions, config asks for 64")

	_, err = pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+" (version, name) VALUES (999, 'future')")
	require.NoError(t, err)
	err = engine.Migrate(ctx, pool, engine.Config{Schema: schema, Partitions: 8})
	require.ErrorIs(t, err, engine.ErrSchemaTooNew)
	require.ErrorContains(t, err, "version 999")

	eng, err := engine.New(pool, nopPublisher{}, engine.Config{Schema: schema})
	require.NoError(t, err)
	require.ErrorIs(t, eng.Run(ctx), engine.ErrSchemaTooNew)
}

func TestMigrateRejectsBadConfig(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	for _, tc := range []struct {
		cfg  engine.Config
		want string
	}{
		{engine.Config{Schema: "bad-name"}, `Schema = "bad-name"`},
		{engine.Config{Schema: "x; drop"}, `Schema = "x; drop"`},
		{engine.Config{Partitions: 2000}, "Partitions = 2000"},
		{engine.Config{Partitions: -3}, "Partitions = -3"},
	} {
		err := engine.Migrate(context.Background(), pool, tc.cfg)
		require.ErrorIs(t, err, engine.ErrInvalidConfig)
		require.ErrorContains(t, err, tc.want)
	}
}

func TestRenderedMigrationsUseTheSchema(t *testing.T) {
	t.Parallel()
	for _, m := range engine.Migrations() {
		sql := m.Render(engine.Config{Schema: "custom_outbox", Partitions: 12})
		require.NotContains(t, sql, "{{", m.Name)
		require.Contains(t, sql, `"custom_outbox".`, m.Name) // every object in the schema
	}
	first := engine.Migrations()[0].Render(engine.Config{Schema: "custom_outbox", Partitions: 12})
	require.Contains(t, first, "< 12")
	require.Contains(t, first, "postrelay_custom_outbox")
	require.Equal(t, 6, engine.SchemaVersion())
	require.Equal(t, fmt.Sprint(engine.SchemaVersion()), fmt.Sprint(engine.Migrations()[len(engine.Migrations())-1].Version))
}

// A schema at version 1 with records pending (one backing off after failed
// attempts, one delayed) is refused by the engine until migrated; Migrate
// then brings it to the newest version without losing a record, the
// records table gets its new key, and the relay delivers every record in
// order per key.
func TestMigrateVersion1Forward(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, schema := pgtest.FreshSchema(t)
	cfg := fastConfig(schema)
	ident := func(table string) string { return pgx.Identifier{schema, table}.Sanitize() }

	// Version 1 exactly as Migrate of a version-1 binary left it.
	v1 := engine.Migrations()[0]
	require.Equal(t, 1, v1.Version)
	for _, s := range []string{
		"CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{schema}.Sanitize(),
		"CREATE TABLE " + ident("schema_migrations") + " (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
		v1.Render(cfg),
	} {
		_, err := pool.Exec(ctx, s)
		require.NoError(t, err)
	}
	_, err := pool.Exec(ctx, "INSERT INTO "+ident("schema_migrations")+" (version, name) VALUES (1, $1)", v1.Name)
	require.NoError(t, err)

	b := &bundle{pool: pool, cfg: cfg, writer: engine.NewWriter(cfg), pub: recorder.New()}
	var recs []engine.Record
	for i := range 60 {
		recs = append(recs, rec("orders", fmt.Sprint("k", i%6), i))
	}
	recs[7].DeliverAfter = 300 * time.Millisecond
	writeTx(t, b, true, recs...)
	// A record of key k0 that already failed twice and backs off briefly.
	_, err = pool.Exec(ctx, "UPDATE "+ident("records")+
		" SET attempts = 2, last_error = 'broker down', available_at = now() + interval '200 milliseconds' WHERE id = (SELECT min(id) FROM "+ident("records")+")")
	require.NoError(t, err)

	eng, err := engine.New(pool, b.pub, cfg)
	require.NoError(t, err)
	require.ErrorIs(t, eng.Run(ctx), engine.ErrNotMigrated, "a binary needing the newest version refuses version 1")

	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	var versions []int32
	rows, err := pool.Query(ctx, "SELECT version FROM "+ident("schema_migrations")+" ORDER BY version")
	require.NoError(t, err)
	versions, err = pgx.CollectRows(rows, pgx.RowTo[int32])
	require.NoError(t, err)
	require.Equal(t, []int32{1, 2, 3, 4, 5, 6}, versions)
	var key string
	require.NoError(t, pool.QueryRow(ctx, `SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::regclass AND indisprimary`,
		ident("records")).Scan(&key))
	require.Contains(t, key, "(partition, id)")
	require.Equal(t, 60, count(t, b, "records"), "no record lost by the migration")
	var attempts int
	require.NoError(t, pool.QueryRow(ctx, "SELECT max(attempts) FROM "+ident("records")).Scan(&attempts))
	require.Equal(t, 2, attempts, "attempts kept")

	start(t, b, cfg, b.pub)
	require.NoError(t, b.pub.WaitFor(20*time.Second, func(ds []recorder.Delivery) bool { return len(recorder.UniqueUUIDs(ds)) == 60 }))
	require.NoError(t, recorder.CheckKeyOrder(b.pub.Deliveries()))
	for _, d := range b.pub.Deliveries() {
		if d.Attempt == 3 {
			return // the record that had failed twice went out as its third attempt
		}
	}
	t.Fatal("the record with two failed attempts was not delivered as attempt 3")
}

// A schema at version 3 with history rows over two delivery days: Migrate
// moves them into version 5's batches (per day and 1,000 ids) and on into
// version 6's (one per version 5 batch and partition), in partitions of
// the same days, and Replay publishes every one in id order with its
// message id and payload.
func TestMigrateVersion3HistoryForward(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, cfg, ident, day := historySchemaAt(t, 3)
	const n = 2500
	_, err := pool.Exec(ctx, "INSERT INTO "+ident("history")+
		" (id, partition, key, topic, message_id, payload, metadata, created_at, attempts, delivered_at)"+
		" SELECT i, i % 16, 'k' || (i % 7), 'orders', 'm' || i, convert_to(i::text, 'UTF8'), jsonb_build_object('n', i::text), $1::timestamptz, 1,"+
		" CASE WHEN i % 2 = 0 THEN $1::timestamptz ELSE $2::timestamptz END FROM generate_series(1, $3::int) i",
		day(28).Add(time.Hour), day(29).Add(time.Hour), n)
	require.NoError(t, err)

	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	var records, batches int
	require.NoError(t, pool.QueryRow(ctx, "SELECT coalesce(sum(n), 0), count(*) FROM "+ident("history")).Scan(&records, &batches))
	require.Equal(t, n, records, "every history record moved")
	require.Equal(t, 6*8, batches, "version 5: one batch per day and 1,000 ids; version 6: one per version 5 batch and partition (8 a day: odd or even ids, id % 16)")
	require.Equal(t, []string{"history_p20261128", "history_p20261129"}, historyPartitionsOf(t, pool, cfg.Schema))

	pub := recorder.New()
	prog, err := engine.Replay(ctx, pool, cfg, pub, engine.ReplayFilter{}, engine.ReplayOptions{PageSize: 700})
	require.NoError(t, err)
	require.Equal(t, n, prog.Published)
	for i, d := range pub.Deliveries() {
		require.Equal(t, int64(i+1), d.RecordID)
		require.Equal(t, fmt.Sprint("m", i+1), d.UUID)
		require.Equal(t, fmt.Sprint(i+1), d.Payload)
		require.Equal(t, fmt.Sprint(i+1), d.Metadata["n"])
	}
	// The migrated schema runs: MaintainHistory adds today's partitions.
	_, err = engine.MaintainHistory(ctx, pool, cfg, time.Time{})
	require.NoError(t, err)
}

// A schema at version 5 with history batches over two delivery days (a
// batch holding several partitions' records, non-ASCII text, JSON
// metadata, an empty payload, creation times with microseconds): Migrate
// re-encodes each batch into one version 6 row per partition it holds,
// delivered at the batch's time in the partition of its day, with its
// bounds and count, and every record keeps every field; Replay publishes
// them all in id order.
func TestMigrateVersion5HistoryForward(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, cfg, ident, day := historySchemaAt(t, 5)

	record := func(id int64, partition int) engine.HistoryRecord {
		r := engine.HistoryRecord{ID: id, Partition: partition,
			CreatedAt: day(27).Add(time.Duration(id)*time.Minute + time.Duration(id*1234)*time.Microsecond),
			Key:       fmt.Sprint("k", id%3), Topic: "orders", MessageID: fmt.Sprint("m", id),
			Metadata: fmt.Sprintf(`{"n": "%d", "grüße": "日本 \"q\""}`, id), Payload: fmt.Appendf(nil, "p%d", id)}
		switch id % 4 {
		case 1:
			r.Key, r.Topic = "ключ-🔑", "zahlungen/ä"
		case 2:
			r.Payload = []byte{}
		case 3:
			r.Metadata = "{}"
		}
		return r
	}
	type v5batch struct {
		deliveredAt time.Time
		recs        []engine.HistoryRecord
	}
	batches := []v5batch{
		{day(28).Add(time.Hour + 1500*time.Microsecond), []engine.HistoryRecord{record(3, 0), record(1, 0), record(2, 1), record(4, 2), record(6, 1), record(5, 0)}},
		{day(28).Add(20 * time.Hour), []engine.HistoryRecord{record(7, 3), record(9, 3), record(8, 3)}},
		{day(29).Add(time.Minute), []engine.HistoryRecord{record(10, 2), record(11, 0), record(12, 1), record(13, 2), record(14, 0), record(15, 1), record(16, 2), record(17, 0)}},
		{day(29).Add(23 * time.Hour), []engine.HistoryRecord{record(18, 5)}},
	}
	for _, b := range batches {
		var ids []int64
		var parts []int32
		var keys, topics, msgIDs, md []string
		var payloads [][]byte
		var created []time.Time
		first, last := b.recs[0].ID, b.recs[0].ID
		for _, r := range b.recs {
			ids = append(ids, r.ID)
			parts = append(parts, int32(r.Partition))
			keys, topics, msgIDs, md = append(keys, r.Key), append(topics, r.Topic), append(msgIDs, r.MessageID), append(md, r.Metadata)
			payloads = append(payloads, r.Payload)
			created = append(created, r.CreatedAt)
			first, last = min(first, r.ID), max(last, r.ID)
		}
		_, err := pool.Exec(ctx, "INSERT INTO "+ident("history")+
			" (delivered_at, first_id, last_id, n, min_created_at, max_created_at, ids, partitions, keys, topics, message_ids, payloads, metadata, created_at)"+
			" VALUES ($1, $2, $3, $4, (SELECT min(c) FROM unnest($12::timestamptz[]) c), (SELECT max(c) FROM unnest($12::timestamptz[]) c),"+
			" $5, $6, $7, $8, $9, $10, $11::text[]::jsonb[], $12)",
			b.deliveredAt, first, last, len(b.recs), ids, parts, keys, topics, msgIDs, payloads, md, created)
		require.NoError(t, err)
	}

	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	var v int
	require.NoError(t, pool.QueryRow(ctx, "SELECT max(version) FROM "+ident("schema_migrations")).Scan(&v))
	require.Equal(t, 6, v)
	var leftover *string
	require.NoError(t, pool.QueryRow(ctx, "SELECT to_regclass($1)::text", ident("history_v5")).Scan(&leftover))
	require.Nil(t, leftover, "the version 5 table is dropped")
	require.Equal(t, []string{"history_p20261128", "history_p20261129"}, historyPartitionsOf(t, pool, cfg.Schema))

	// The expected version 6 rows: per version 5 batch, one per partition,
	// its records in id order.
	type v6row struct {
		Day                        string
		DeliveredAt                time.Time
		Partition                  int
		FirstID, LastID            int64
		N                          int
		MinCreatedAt, MaxCreatedAt time.Time
		Records                    []engine.HistoryRecord
	}
	var want []v6row
	for _, b := range batches {
		byPart := map[int][]engine.HistoryRecord{}
		for _, r := range b.recs {
			byPart[r.Partition] = append(byPart[r.Partition], r)
		}
		for _, p := range slices.Sorted(maps.Keys(byPart)) {
			recs := slices.SortedFunc(slices.Values(byPart[p]), func(a, b engine.HistoryRecord) int { return cmp.Compare(a.ID, b.ID) })
			w := v6row{Day: "history_p" + b.deliveredAt.Format("20060102"), DeliveredAt: b.deliveredAt, Partition: p,
				FirstID: recs[0].ID, LastID: recs[len(recs)-1].ID, N: len(recs), MinCreatedAt: recs[0].CreatedAt, MaxCreatedAt: recs[0].CreatedAt, Records: recs}
			for _, r := range recs {
				if r.CreatedAt.Before(w.MinCreatedAt) {
					w.MinCreatedAt = r.CreatedAt
				}
				if r.CreatedAt.After(w.MaxCreatedAt) {
					w.MaxCreatedAt = r.CreatedAt
				}
			}
			want = append(want, w)
		}
	}
	rows, err := pool.Query(ctx, "SELECT (SELECT relname::text FROM pg_class WHERE oid = h.tableoid), delivered_at, partition, first_id, last_id, n,"+
		" min_created_at, max_created_at, records FROM "+ident("history")+" h ORDER BY delivered_at, partition")
	require.NoError(t, err)
	var got []v6row
	for rows.Next() {
		var r v6row
		var batch []byte
		require.NoError(t, rows.Scan(&r.Day, &r.DeliveredAt, &r.Partition, &r.FirstID, &r.LastID, &r.N, &r.MinCreatedAt, &r.MaxCreatedAt, &batch))
		r.Records, err = engine.DecodeHistory(batch)
		require.NoError(t, err, "row of partition %d from id %d", r.Partition, r.FirstID)
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	require.Len(t, got, len(want))
	for i := range want {
		w, g := want[i], got[i]
		require.Len(t, g.Records, len(w.Records), "row %d", i)
		for j := range w.Records {
			require.JSONEq(t, w.Records[j].Metadata, g.Records[j].Metadata, "row %d record %d", i, j)
			g.Records[j].Metadata = w.Records[j].Metadata // jsonb normalized the text
		}
		require.True(t, w.DeliveredAt.Equal(g.DeliveredAt), "row %d delivered at %v, want %v", i, g.DeliveredAt, w.DeliveredAt)
		require.True(t, w.MinCreatedAt.Equal(g.MinCreatedAt) && w.MaxCreatedAt.Equal(g.MaxCreatedAt), "row %d created_at bounds", i)
		g.DeliveredAt, g.MinCreatedAt, g.MaxCreatedAt = w.DeliveredAt, w.MinCreatedAt, w.MaxCreatedAt
		require.Equal(t, w, g, "row %d", i)
	}

	// Replay reads the migrated rows: every record, in id order, with its
	// fields.
	pub := recorder.New()
	prog, err := engine.Replay(ctx, pool, cfg, pub, engine.ReplayFilter{}, engine.ReplayOptions{PageSize: 4})
	require.NoError(t, err)
	require.Equal(t, engine.ReplayProgress{Published: 18, Total: 18, LastID: 18}, prog)
	for i, d := range pub.Deliveries() {
		r := record(int64(i+1), 0)
		require.Equal(t, r.ID, d.RecordID)
		require.Equal(t, r.MessageID, d.UUID)
		require.Equal(t, r.Topic, d.Topic)
		require.Equal(t, r.Key, d.Metadata[engine.MetadataKey])
		require.Equal(t, string(r.Payload), d.Payload)
		if r.Metadata != "{}" {
			require.Equal(t, fmt.Sprint(r.ID), d.Metadata["n"])
			require.Equal(t, `日本 "q"`, d.Metadata["grüße"])
		}
	}
	// The migrated schema runs: MaintainHistory adds today's partitions.
	_, err = engine.MaintainHistory(ctx, pool, cfg, time.Time{})
	require.NoError(t, err)
}

// historySchemaAt makes a fresh schema migrated to version v (3 or later:
// it has a history table), with history partitions for 2026-11-28 and
// 2026-11-29, and a Retention of a year; day(d) is midnight UTC of
// November d.
func historySchemaAt(t *testing.T, v int) (pool *pgxpool.Pool, cfg engine.Config, ident func(string) string, day func(int) time.Time) {
	t.Helper()
	ctx := context.Background()
	pool, schema := pgtest.FreshSchema(t)
	cfg = fastConfig(schema)
	cfg.Retention = 24 * 365 * time.Hour
	ident = func(table string) string { return pgx.Identifier{schema, table}.Sanitize() }
	_, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()+"; CREATE TABLE "+ident("schema_migrations")+
		" (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
	require.NoError(t, err)
	ms := engine.Migrations()
	require.Equal(t, v, ms[v-1].Version)
	for _, m := range ms[:v] {
		_, err := pool.Exec(ctx, m.Render(cfg))
		require.NoError(t, err, m.Name)
		_, err = pool.Exec(ctx, "INSERT INTO "+ident("schema_migrations")+" (version, name) VALUES ($1, $2)", m.Version, m.Name)
		require.NoError(t, err)
	}
	day = func(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, time.UTC) }
	for _, d := range []int{28, 29} {
		_, err := pool.Exec(ctx, fmt.Sprintf("CREATE TABLE %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')",
			ident(fmt.Sprintf("history_p202611%d", d)), ident("history"), day(d).Format(time.RFC3339), day(d+1).Format(time.RFC3339)))
		require.NoError(t, err)
	}
	return pool, cfg, ident, day
}
