package engine_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/recorder"
)

func historyPartitions(t *testing.T, b *bundle) []string {
	t.Helper()
	return historyPartitionsOf(t, b.pool, b.cfg.Schema)
}

// historyPartitionsOf lists the day partitions of schema's history table.
func historyPartitionsOf(t *testing.T, pool *pgxpool.Pool, schema string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass ORDER BY 1`, pgx.Identifier{schema, "history"}.Sanitize())
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

// retainedBundle is setup with Retention (a day) and today's history
// partitions made.
func retainedBundle(t *testing.T) (*bundle, engine.Config) {
	t.Helper()
	b := setup(t)
	cfg := b.cfg
	cfg.Retention = 24 * time.Hour
	_, err := engine.MaintainHistory(context.Background(), b.pool, cfg, time.Time{})
	require.NoError(t, err)
	return b, cfg
}

// historyRecords counts the records the history's batches hold.
func historyRecords(t *testing.T, b *bundle) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(),
		"SELECT coalesce(sum(n), 0) FROM "+pgx.Identifier{b.cfg.Schema, "history"}.Sanitize()).Scan(&n))
	return n
}

// insertBatch stores recs as one history row (schema version 6: one
// partition's share of a completion statement, the partition being that of
// recs[0]), its bounds and count taken from the records, delivered at
// deliveredAt (zero: now()).
func insertBatch(t *testing.T, b *bundle, deliveredAt time.Time, recs ...engine.HistoryRecord) {
	t.Helper()
	require.NotEmpty(t, recs)
	first, last := recs[0].ID, recs[0].ID
	minC, maxC := recs[0].CreatedAt, recs[0].CreatedAt
	for _, r := range recs {
		first, last = min(first, r.ID), max(last, r.ID)
		if r.CreatedAt.Before(minC) {
			minC = r.CreatedAt
		}
		if r.CreatedAt.After(maxC) {
			maxC = r.CreatedAt
		}
	}
	var at any // NULL: now()
	if !deliveredAt.IsZero() {
		at = deliveredAt
	}
	_, err := b.pool.Exec(context.Background(), "INSERT INTO "+pgx.Identifier{b.cfg.Schema, "history"}.Sanitize()+
		" (delivered_at, partition, first_id, last_id, n, min_created_at, max_created_at, records)"+
		" VALUES (coalesce($1, now()), $2, $3, $4, $5, $6, $7, $8)",
		at, recs[0].Partition, first, last, len(recs), minC, maxC, engine.EncodeHistory(recs...))
	require.NoError(t, err)
}

// waitHistory waits until the history holds n records.
func waitHistory(t *testing.T, b *bundle, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return historyRecords(t, b) == n }, 20*time.Second, 10*time.Millisecond,
		"history records, want %d", n)
}

// With Retention, every delivered record (and no dead-lettered one) lands
// in the history with its message id, in today's partition, which Run
// created with the next days'. Without Retention the history stays empty
// and has no partitions.
func TestRetentionKeepsDeliveredRecords(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.Retention = 48 * time.Hour
	cfg.MaxAttempts = 1
	b.pub.SetFail(func(_ string, m *message.Message) error {
		if string(m.Payload) == "poison" {
			return fmt.Errorf("refused")
		}
		return nil
	})
	start(t, b, cfg, b.pub)
	var recs []engine.Record
	for i := range 20 {
		recs = append(recs, engine.Record{Topic: "t", Key: fmt.Sprint("k", i%2), Payload: fmt.Appendf(nil, "%d", i), MessageID: fmt.Sprint("m", i)})
	}
	recs = append(recs, engine.Record{Topic: "t", Key: "p", Payload: []byte("poison"), MessageID: "poison"})
	writeTx(t, b, true, recs...)
	waitHistory(t, b, 20)
	require.Eventually(t, func() bool { return count(t, b, "dead_letters") == 1 }, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, 0, count(t, b, "records"))
	require.Equal(t, 20, historyRecords(t, b), "the dead-lettered record is not in the history")

	// Each history row is one partition's batch: its records carry their
	// message ids and payloads, lie in its partition and id bounds, and
	// number n.
	var ids []string
	rows, err := b.pool.Query(context.Background(), "SELECT r.message_id FROM "+pgx.Identifier{cfg.Schema, "history"}.Sanitize()+
		" b, "+pgx.Identifier{cfg.Schema, "history_records"}.Sanitize()+"(b.records) r"+
		" WHERE r.message_id = 'm' || convert_from(r.payload, 'UTF8') AND r.partition = b.partition"+
		" AND r.id BETWEEN b.first_id AND b.last_id AND r.created_at BETWEEN b.min_created_at AND b.max_created_at ORDER BY r.id")
	require.NoError(t, err)
	ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Len(t, ids, 20)
	require.Equal(t, "m0", ids[0])
	var badCounts int
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{cfg.Schema, "history"}.Sanitize()+
		" b WHERE b.n <> (SELECT count(*) FROM "+pgx.Identifier{cfg.Schema, "history_records"}.Sanitize()+"(b.records))").Scan(&badCounts))
	require.Zero(t, badCounts, "rows whose n is not their record count")

	var today time.Time
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT now()").Scan(&today))
	parts := historyPartitions(t, b)
	require.Len(t, parts, 3, "today and the next two days")
	require.Equal(t, "history_p"+today.UTC().Format("20060102"), parts[0])

	// Without Retention: no history at all.
	b2 := setup(t)
	start(t, b2, b2.cfg, b2.pub)
	writeTx(t, b2, true, recs[:5]...)
	require.NoError(t, b2.pub.WaitFor(20*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 5 }))
	require.Eventually(t, func() bool { return count(t, b2, "records") == 0 }, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, 0, count(t, b2, "history"))
	require.Empty(t, historyPartitions(t, b2))
}

// The retention window: a day's partition is dropped whole once all of
// that day is older than Retention; a partition holding any row younger
// than that is kept whole (rows live at least Retention, at most a day
// more). Partitions for today and the next two days are created ahead.
func TestRetentionDropsExpiredDaysWhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.Retention = 72 * time.Hour
	ctx := context.Background()
	day := func(d, h int) time.Time { return time.Date(2030, 1, d, h, 0, 0, 0, time.UTC) }

	res, err := engine.MaintainHistory(ctx, b.pool, cfg, day(5, 12))
	require.NoError(t, err)
	require.Equal(t, []string{"history_p20300105", "history_p20300106", "history_p20300107"}, res.Created)
	for _, d := range []time.Time{day(5, 1), day(5, 23), day(6, 12), day(7, 1), day(7, 23)} {
		insertBatch(t, b, d, engine.HistoryRecord{ID: d.Unix(), CreatedAt: d, Key: "k", Topic: "t", MessageID: d.Format(time.RFC3339), Metadata: "{}"})
	}

	// Now 2030-01-10 12:00, retention 72h: the cut is 2030-01-07 12:00.
	// The 5th and 6th ended before it: dropped. The 7th ends after it:
	// kept whole, including its row of 01:00 (older than 72h).
	res, err = engine.MaintainHistory(ctx, b.pool, cfg, day(10, 12))
	require.NoError(t, err)
	require.Equal(t, []string{"history_p20300105", "history_p20300106"}, slices.Sorted(slices.Values(res.Dropped)))
	require.Equal(t, []string{"history_p20300110", "history_p20300111", "history_p20300112"}, res.Created)
	require.Equal(t, []string{"history_p20300107", "history_p20300110", "history_p20300111", "history_p20300112"}, historyPartitions(t, b))
	require.Equal(t, 2, count(t, b, "history"))

	// Idempotent.
	res, err = engine.MaintainHistory(ctx, b.pool, cfg, day(10, 13))
	require.NoError(t, err)
	require.Empty(t, res.Created)
	require.Empty(t, res.Dropped)
	// A day later the 7th goes too.
	res, err = engine.MaintainHistory(ctx, b.pool, cfg, day(11, 0))
	require.NoError(t, err)
	require.Equal(t, []string{"history_p20300107"}, res.Dropped)
	require.Equal(t, 0, count(t, b, "history"))

	_, err = engine.MaintainHistory(ctx, b.pool, b.cfg, time.Time{})
	require.ErrorIs(t, err, engine.ErrInvalidConfig, "no retention configured")
	bad := b.cfg
	bad.Retention = -time.Hour
	require.ErrorContains(t, bad.WithDefaults().Validate(), "Retention = -1h0m0s")
}

// Replay re-publishes exactly the selected history records (by topic, key
// and creation window), once each, in id order (so per key in order), with
// their original message ids, payloads and metadata, throttled to Rate,
// reporting progress; AfterID resumes.
func TestReplayRedeliversSelectedRecordsInKeyOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.Retention = 24 * time.Hour
	start(t, b, cfg, b.pub)
	ctx := context.Background()
	dbNow := func() time.Time {
		var now time.Time
		require.NoError(t, b.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now))
		return now
	}
	batch := func(from, to int, extra ...engine.Record) {
		var recs []engine.Record
		for i := from; i < to; i++ {
			recs = append(recs, engine.Record{Topic: "orders", Key: fmt.Sprint("k", i%3), Payload: fmt.Appendf(nil, "o%d", i),
				MessageID: fmt.Sprint("o", i), Metadata: map[string]string{"n": fmt.Sprint(i)}})
		}
		writeTx(t, b, true, append(recs, extra...)...)
	}
	batch(0, 10)
	t1 := dbNow()
	batch(10, 20, engine.Record{Topic: "other", Key: "k0", Payload: []byte("x"), MessageID: "x1"})
	t2 := dbNow()
	batch(20, 30)
	waitHistory(t, b, 31)

	replay := func(f engine.ReplayFilter, opts engine.ReplayOptions) (*recorder.Publisher, engine.ReplayProgress) {
		pub := recorder.New()
		prog, err := engine.Replay(ctx, b.pool, cfg, pub, f, opts)
		require.NoError(t, err)
		require.NoError(t, recorder.CheckKeyOrder(pub.Deliveries()))
		for _, d := range pub.Deliveries() {
			require.Equal(t, "true", d.Metadata[engine.MetadataReplay])
			require.Equal(t, "o"+d.Metadata["n"], d.UUID, "original message id")
			require.Equal(t, d.UUID, d.Payload)
		}
		return pub, prog
	}
	uuids := func(pub *recorder.Publisher) []string {
		var out []string
		for _, d := range pub.Deliveries() {
			out = append(out, d.UUID)
		}
		return out
	}

	var calls int
	started := time.Now()
	pub, prog := replay(engine.ReplayFilter{Topic: "orders", Since: t1, Until: t2},
		engine.ReplayOptions{Rate: 200, PageSize: 3, Progress: func(engine.ReplayProgress) { calls++ }})
	elapsed := time.Since(started)
	want := []string{"o10", "o11", "o12", "o13", "o14", "o15", "o16", "o17", "o18", "o19"}
	require.Equal(t, want, uuids(pub), "exactly the window's orders, in id order")
	require.Equal(t, engine.ReplayProgress{Published: 10, Total: 10, LastID: pub.Deliveries()[9].RecordID}, prog)
	require.Equal(t, 10, calls)
	require.GreaterOrEqual(t, elapsed, 45*time.Millisecond, "10 records at 200/s take at least 9 intervals of 5 ms")

	pub, _ = replay(engine.ReplayFilter{Topic: "orders", Key: "k1", Since: t1}, engine.ReplayOptions{})
	require.Equal(t, []string{"o10", "o13", "o16", "o19", "o22", "o25", "o28"}, uuids(pub))

	// Resume after the 4th record of a full replay of the topic.
	pub, _ = replay(engine.ReplayFilter{Topic: "orders"}, engine.ReplayOptions{})
	require.Len(t, pub.Deliveries(), 30)
	fourth := pub.Deliveries()[3].RecordID
	pub, prog = replay(engine.ReplayFilter{Topic: "orders", AfterID: fourth}, engine.ReplayOptions{})
	require.Len(t, pub.Deliveries(), 26)
	require.Equal(t, "o4", pub.Deliveries()[0].UUID)
	require.Equal(t, 26, prog.Total)

	_, err := engine.Replay(ctx, b.pool, cfg, recorder.New(), engine.ReplayFilter{Since: t2, Until: t1}, engine.ReplayOptions{})
	require.ErrorIs(t, err, engine.ErrInvalidConfig)
}

// Batches overlap in id range (a partition's records interleave with
// other partitions' ids; a retried record delivered late widens its
// batch): Replay still publishes every record the filter selects (by
// topic, key and creation window, decoded from the batches) once, in id
// order, with its fields, whatever the page size, and resumes after any
// id.
func TestReplayMergesOverlappingBatches(t *testing.T) {
	t.Parallel()
	b, cfg := retainedBundle(t)
	ctx := context.Background()
	var base time.Time
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT date_trunc('second', now()) - interval '1 hour'").Scan(&base))
	batches := []struct {
		partition int
		ids       []int64
	}{
		{3, []int64{9, 1, 5, 100}}, // a retried record (1) delivered late with newer ones
		{4, []int64{2, 3, 4, 6}},
		{3, []int64{7, 8, 10, 11}},
		{5, []int64{50}},
		{6, []int64{12, 60, 13, 61}},
		{3, []int64{101, 102}},
	}
	recs := map[int64]engine.HistoryRecord{}
	for _, bt := range batches {
		var batch []engine.HistoryRecord
		for _, id := range bt.ids {
			r := engine.HistoryRecord{ID: id, Partition: bt.partition, CreatedAt: base.Add(time.Duration(id)*time.Second + 250*time.Microsecond),
				Key: fmt.Sprint("k", id%3), Topic: "t", MessageID: fmt.Sprint("m", id), Metadata: fmt.Sprintf(`{"n": "%d", "grüße": "ü"}`, id),
				Payload: fmt.Append(nil, id)}
			if id%5 == 0 {
				r.Topic, r.Key = "u", "schlüssel"
			}
			recs[id] = r
			batch = append(batch, r)
		}
		insertBatch(t, b, time.Time{}, batch...)
	}
	ids := slices.Sorted(maps.Keys(recs))
	filters := []engine.ReplayFilter{
		{},
		{Topic: "t"},
		{Key: "k1"},
		{Topic: "u", Key: "schlüssel"},
		{Since: base.Add(10 * time.Second), Until: base.Add(61 * time.Second)},
		{Topic: "t", Since: base.Add(60*time.Second + 250*time.Microsecond)}, // at a record's creation: included
		{Until: base.Add(9*time.Second + 250*time.Microsecond)},              // at a record's creation: excluded
	}
	for _, f := range filters {
		for _, size := range []int{1, 2, 3, 5, 500} {
			for _, after := range []int64{0, 5, 11, 60, 102} {
				f.AfterID = after
				var want []int64
				for _, id := range ids {
					r := recs[id]
					if id > after && (f.Topic == "" || r.Topic == f.Topic) && (f.Key == "" || r.Key == f.Key) &&
						(f.Since.IsZero() || !r.CreatedAt.Before(f.Since)) && (f.Until.IsZero() || r.CreatedAt.Before(f.Until)) {
						want = append(want, id)
					}
				}
				pub := recorder.New()
				prog, err := engine.Replay(ctx, b.pool, cfg, pub, f, engine.ReplayOptions{PageSize: size})
				require.NoError(t, err)
				var got []int64
				for _, d := range pub.Deliveries() {
					r := recs[d.RecordID]
					got = append(got, d.RecordID)
					require.Equal(t, r.MessageID, d.UUID)
					require.Equal(t, r.Topic, d.Topic)
					require.Equal(t, string(r.Payload), d.Payload)
					require.Equal(t, map[string]string{"n": fmt.Sprint(r.ID), "grüße": "ü", engine.MetadataKey: r.Key,
						engine.MetadataRecordID: fmt.Sprint(r.ID), engine.MetadataPartition: fmt.Sprint(r.Partition), engine.MetadataReplay: "true"}, d.Metadata)
				}
				require.Equal(t, want, got, "filter %+v, page size %d", f, size)
				require.Equal(t, len(want), prog.Total, "filter %+v", f)
				require.Equal(t, len(want), prog.Published)
			}
		}
	}
	require.Len(t, ids, 19)
}

// A history row whose batch does not decode, holds other than its n
// records, or holds a record outside its id bounds stops Replay before it
// publishes anything, with an error naming the batch by partition and
// first id.
func TestReplayStopsAtABadBatch(t *testing.T) {
	t.Parallel()
	b, cfg := retainedBundle(t)
	ctx := context.Background()
	var now time.Time
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT now()").Scan(&now))
	rec := func(id int64) engine.HistoryRecord {
		return engine.HistoryRecord{ID: id, Partition: 9, CreatedAt: now, Key: "k", Topic: "t", MessageID: fmt.Sprint("m", id), Metadata: "{}", Payload: []byte("p")}
	}
	insertBatch(t, b, time.Time{}, rec(1), rec(2))
	two := engine.EncodeHistory(rec(20), rec(21))
	for _, tc := range []struct {
		name        string
		first, last int64
		n           int
		records     []byte
		want        string
	}{
		{"cut inside a record", 20, 21, 2, two[:len(two)-1], "truncated at byte"},
		{"unknown format", 20, 21, 2, append([]byte{7}, two[1:]...), "format 7, want 1"},
		{"empty", 20, 21, 2, []byte{}, "format -1, want 1"},
		{"cut between records", 20, 21, 2, engine.EncodeHistory(rec(20)), "1 records, the batch row says 2"},
		{"record outside the bounds", 20, 20, 2, two, "record 21 outside the batch's ids 20 to 20"},
	} {
		_, err := b.pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{cfg.Schema, "history"}.Sanitize()+
			" (partition, first_id, last_id, n, min_created_at, max_created_at, records) VALUES (9, $1, $2, $3, $4, $4, $5)",
			tc.first, tc.last, tc.n, now, tc.records)
		require.NoError(t, err)
		pub := recorder.New()
		prog, err := engine.Replay(ctx, b.pool, cfg, pub, engine.ReplayFilter{}, engine.ReplayOptions{PageSize: 1})
		require.ErrorContains(t, err, "history batch of partition 9 from id 20: ", tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
		require.Empty(t, pub.Deliveries(), tc.name)
		require.Zero(t, prog.Published, tc.name)
		_, err = b.pool.Exec(ctx, "DELETE FROM "+pgx.Identifier{cfg.Schema, "history"}.Sanitize()+" WHERE first_id = 20")
		require.NoError(t, err)
	}
	pub := recorder.New()
	prog, err := engine.Replay(ctx, b.pool, cfg, pub, engine.ReplayFilter{}, engine.ReplayOptions{})
	require.NoError(t, err, "without the bad row")
	require.Equal(t, 2, prog.Published)
}

// history_records(batch), the SQL function for queries by hand, returns
// exactly the records decodeHistory decodes from the same batch, and
// refuses a batch of another format.
func TestHistoryRecordsFunctionMatchesDecoder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	recs := []engine.HistoryRecord{
		{ID: 42, Partition: 3, CreatedAt: time.Date(2026, 12, 2, 1, 2, 3, 123456000, time.UTC), Key: "acct-42", Topic: "orders",
			MessageID: "m-42", Metadata: `{"n": "1", "trace": "abc"}`, Payload: []byte(`{"total":12}`)},
		{ID: 0, Partition: 0, CreatedAt: time.Unix(0, 0).UTC(), Key: "ключ-🔑-ü", Topic: "zahlungen/ä",
			MessageID: "ü-2", Metadata: `{"grüße": "日本", "q": "a \"b\" \\ c"}`, Payload: []byte{}},
		{ID: -5, Partition: 2147483647, CreatedAt: time.Date(1969, 7, 20, 20, 17, 40, 999999000, time.UTC), Key: "",
			Topic: "t", MessageID: "", Metadata: `{}`, Payload: []byte{0, 1, 0xff, 0}},
		{ID: 9223372036854775807, Partition: -1, CreatedAt: time.Date(2200, 1, 1, 0, 0, 0, 1000, time.UTC), Key: "k",
			Topic: "t", MessageID: "m-max", Metadata: `{"a": "b"}`, Payload: []byte(strings.Repeat("x", 5000))},
		{ID: -9223372036854775808, Partition: 1, CreatedAt: time.Date(2000, 2, 29, 23, 59, 59, 1000, time.UTC), Key: "k",
			Topic: "t", MessageID: "m-min", Metadata: `{}`, Payload: []byte("p")},
	}
	batch := engine.EncodeHistory(recs...)
	want, err := engine.DecodeHistory(batch)
	require.NoError(t, err)
	require.Equal(t, recs, want)

	fn := pgx.Identifier{b.cfg.Schema, "history_records"}.Sanitize()
	rows, err := b.pool.Query(ctx, "SELECT id, partition, created_at, key, topic, message_id, metadata::text, payload FROM "+fn+"($1)", batch)
	require.NoError(t, err)
	var got []engine.HistoryRecord
	for rows.Next() {
		var r engine.HistoryRecord
		require.NoError(t, rows.Scan(&r.ID, &r.Partition, &r.CreatedAt, &r.Key, &r.Topic, &r.MessageID, &r.Metadata, &r.Payload))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	require.Len(t, got, len(want))
	for i := range want {
		w, g := want[i], got[i]
		require.JSONEq(t, w.Metadata, g.Metadata, "record %d metadata (jsonb normalizes the text)", i)
		require.True(t, w.CreatedAt.Equal(g.CreatedAt), "record %d created_at: %v, want %v", i, g.CreatedAt, w.CreatedAt)
		require.Equal(t, string(w.Payload), string(g.Payload), "record %d payload", i)
		w.Metadata, w.CreatedAt, w.Payload = "", time.Time{}, nil
		g.Metadata, g.CreatedAt, g.Payload = "", time.Time{}, nil
		require.Equal(t, w, g, "record %d", i)
	}

	var n int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM "+fn+"($1)", []byte{1}).Scan(&n))
	require.Zero(t, n, "a batch of no records")
	_, err = b.pool.Exec(ctx, "SELECT * FROM "+fn+"($1)", append([]byte{2}, batch[1:]...))
	require.ErrorContains(t, err, "history batch: unknown format")
	_, err = b.pool.Exec(ctx, "SELECT * FROM "+fn+"($1)", []byte{})
	require.ErrorContains(t, err, "history batch: unknown format")
}
