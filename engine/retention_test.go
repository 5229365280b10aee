package engine_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/recorder"
)

func historyPartitions(t *testing.T, b *bundle) []string {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass ORDER BY 1`, pgx.Identifier{b.cfg.Schema, "history"}.Sanitize())
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

// historyRecords counts the records the history's batches hold.
func historyRecords(t *testing.T, b *bundle) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(),
		"SELECT coalesce(sum(n), 0) FROM "+pgx.Identifier{b.cfg.Schema, "history"}.Sanitize()).Scan(&n))
	return n
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

	// Each batch's arrays line up: element i of ids, message_ids and
	// payloads is the same record.
	var ids []string
	rows, err := b.pool.Query(context.Background(), "SELECT r.message_id FROM "+pgx.Identifier{cfg.Schema, "history"}.Sanitize()+
		" b, unnest(b.ids, b.message_ids, b.payloads) AS r(id, message_id, payload)"+
		" WHERE r.message_id = 'm' || convert_from(r.payload, 'UTF8') AND r.id BETWEEN b.first_id AND b.last_id ORDER BY r.id")
	require.NoError(t, err)
	ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Len(t, ids, 20)
	require.Equal(t, "m0", ids[0])

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
		_, err := b.pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{cfg.Schema, "history"}.Sanitize()+
			" (delivered_at, first_id, last_id, n, min_created_at, max_created_at, ids, partitions, keys, topics, message_ids, payloads, metadata, created_at)"+
			" VALUES ($3, $1, $1, 1, $3, $3, ARRAY[$1::bigint], '{0}', '{k}', '{t}', ARRAY[$2::text], ARRAY[''::bytea], ARRAY['{}'::jsonb], ARRAY[$3::timestamptz])",
			d.Unix(), d.Format(time.RFC3339), d)
		require.NoError(t, err)
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

// Batches overlap in id range (a batch holds several partitions' records;
// a retried record delivered late widens its batch): Replay still
// publishes every selected record once, in id order, whatever the page
// size, and resumes after any id.
func TestReplayMergesOverlappingBatches(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.Retention = 24 * time.Hour
	ctx := context.Background()
	_, err := engine.MaintainHistory(ctx, b.pool, cfg, time.Time{})
	require.NoError(t, err)
	batches := [][]int64{
		{9, 1, 5, 100}, // a retried record (1) delivered late with newer ones
		{2, 3, 4, 6},
		{7, 8, 10, 11},
		{50},
		{12, 60, 13, 61},
		{101, 102},
	}
	var want []int64
	for _, ids := range batches {
		want = append(want, ids...)
		var keys, topics, msgIDs []string
		var payloads [][]byte
		var parts []int32
		var md []map[string]string
		for _, id := range ids {
			keys = append(keys, fmt.Sprint("k", id%3))
			topics = append(topics, "t")
			msgIDs = append(msgIDs, fmt.Sprint("m", id))
			payloads = append(payloads, fmt.Append(nil, id))
			parts = append(parts, int32(id%16))
			md = append(md, map[string]string{})
		}
		_, err := b.pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{cfg.Schema, "history"}.Sanitize()+
			" (first_id, last_id, n, min_created_at, max_created_at, ids, partitions, keys, topics, message_ids, payloads, metadata, created_at)"+
			" SELECT min(i), max(i), count(*), now(), now(), $1, $2, $3, $4, $5, $6, $7, array_fill(now(), ARRAY[cardinality($1)]) FROM unnest($1::bigint[]) i",
			ids, parts, keys, topics, msgIDs, payloads, md)
		require.NoError(t, err)
	}
	slices.Sort(want)
	for _, size := range []int{1, 2, 3, 5, 500} {
		for _, after := range []int64{0, 5, 11, 60, 102} {
			pub := recorder.New()
			prog, err := engine.Replay(ctx, b.pool, cfg, pub, engine.ReplayFilter{AfterID: after}, engine.ReplayOptions{PageSize: size})
			require.NoError(t, err)
			var got []int64
			for _, d := range pub.Deliveries() {
				got = append(got, d.RecordID)
				require.Equal(t, fmt.Sprint("m", d.RecordID), d.UUID)
				require.Equal(t, fmt.Sprint(d.RecordID), d.Payload)
			}
			var wantAfter []int64
			for _, id := range want {
				if id > after {
					wantAfter = append(wantAfter, id)
				}
			}
			require.Equal(t, wantAfter, got, "page size %d, after %d", size, after)
			require.Equal(t, len(wantAfter), prog.Total)
		}
	}
}
