package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// BenchmarkConsolePages measures each API call the pages make on an outbox
// of 64 partitions holding 1,000,000 pending records (50,000 keys, 100 of
// them stuck behind a failing head, 50 behind a delayed one) and 10,000
// dead letters, two relays' leases and heartbeats. It reports the median
// and 90th percentile of b.N calls over loopback HTTP, and with
// POSTRELAY_EXPLAIN=1 logs each statement's plan (EXPLAIN ANALYZE).
//
//	go test ./adapters/console -run '^$' -bench ConsolePages -benchtime 50x -v
//
// POSTRELAY_BENCH_PENDING changes the record count; POSTRELAY_BENCH_VACUUM=0
// skips the VACUUM ANALYZE after loading (then index-only scans visit the
// heap, as on a table autovacuum has not reached).
func BenchmarkConsolePages(b *testing.B) {
	pending := 1_000_000
	if v := os.Getenv("POSTRELAY_BENCH_PENDING"); v != "" {
		_, err := fmt.Sscan(v, &pending)
		require.NoError(b, err)
	}
	ctx := context.Background()
	pool, schema := pgtest.FreshSchema(b)
	ecfg := engine.Config{Schema: schema, Partitions: 64}
	require.NoError(b, engine.Migrate(ctx, pool, ecfg))
	id := func(t string) string { return pgx.Identifier{schema, t}.Sanitize() }
	start := time.Now()
	for _, sql := range []string{
		`CREATE TEMP TABLE bench_keys AS SELECT n, 'customer-' || n AS key, ` + id("partition_for") + `('customer-' || n) AS p
			FROM generate_series(0, 49999) n`,
		`INSERT INTO ` + id("records") + ` (partition, key, topic, message_id, payload, metadata, created_at)
			SELECT k.p, k.key, 'orders', gen_random_uuid()::text,
			       convert_to('{"order":' || i || ',"cents":4200,"note":"some payload of a realistic size"}', 'UTF8'),
			       '{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
			       now() - interval '10 minutes' + i * interval '1 millisecond'
			FROM generate_series(1, $1::int) i JOIN bench_keys k ON k.n = i % 50000`,
		// Stuck heads: the first record of 100 keys failing, 50 delayed.
		`UPDATE ` + id("records") + ` r SET attempts = 4, last_error = 'kafka: broker refused the message: MESSAGE_TOO_LARGE',
			available_at = now() + interval '3 minutes'
			FROM (SELECT k.p, min(r2.id) AS id FROM bench_keys k JOIN ` + id("records") + ` r2 ON r2.partition = k.p AND r2.key = k.key
			      WHERE k.n < 150 GROUP BY k.p, k.key) h
			WHERE r.partition = h.p AND r.id = h.id AND r.id % 3 <> 0`,
		`UPDATE ` + id("records") + ` r SET available_at = now() + interval '1 hour'
			FROM (SELECT k.p, min(r2.id) AS id FROM bench_keys k JOIN ` + id("records") + ` r2 ON r2.partition = k.p AND r2.key = k.key
			      WHERE k.n < 150 GROUP BY k.p, k.key) h
			WHERE r.partition = h.p AND r.id = h.id AND r.id % 3 = 0`,
		`INSERT INTO ` + id("dead_letters") + ` (id, partition, key, topic, message_id, payload, metadata, created_at, attempts, last_error)
			SELECT 10000000 + i, k.p, k.key, CASE WHEN i % 10 = 0 THEN 'refunds' ELSE 'orders' END, gen_random_uuid()::text,
			       convert_to('{"order":' || i || '}', 'UTF8'), '{}', now() - interval '1 day', 10,
			       CASE WHEN i % 100 = 0 THEN 'amqp: NOT_FOUND - no exchange' ELSE 'kafka: MESSAGE_TOO_LARGE' END
			FROM generate_series(1, 10000) i JOIN bench_keys k ON k.n = (i * 7) % 50000`,
		`INSERT INTO ` + id("instances") + ` (id, hostname, pid) VALUES ('relay-a', 'host-a', 1), ('relay-b', 'host-b', 2)`,
		`UPDATE ` + id("partitions") + ` SET owner = CASE WHEN partition % 2 = 0 THEN 'relay-a' ELSE 'relay-b' END,
			epoch = 3, lease_until = now() + interval '1 hour'`,
	} {
		var err error
		if strings.Contains(sql, "$1") {
			_, err = pool.Exec(ctx, sql, pending)
		} else {
			_, err = pool.Exec(ctx, sql)
		}
		require.NoError(b, err, sql)
	}
	if os.Getenv("POSTRELAY_BENCH_VACUUM") != "0" {
		_, err := pool.Exec(ctx, `VACUUM ANALYZE `+id("records")+`, `+id("dead_letters")+`, `+id("partitions"))
		require.NoError(b, err)
	} else {
		_, err := pool.Exec(ctx, `ANALYZE `+id("records")+`, `+id("dead_letters")+`, `+id("partitions"))
		require.NoError(b, err)
	}
	var msgID, key string
	var recID int64
	require.NoError(b, pool.QueryRow(ctx, `SELECT message_id, key, id FROM `+id("records")+` WHERE partition = 5 ORDER BY id DESC LIMIT 1`).Scan(&msgID, &key, &recID))
	b.Logf("loaded %d pending records and 10,000 dead letters in %v", pending, time.Since(start).Round(time.Second))

	con, err := New(pool, Config{Schema: schema, ReadOnly: true})
	require.NoError(b, err)
	srv := httptest.NewServer(con)
	b.Cleanup(srv.Close)
	var deadMsgID string
	require.NoError(b, pool.QueryRow(ctx, `SELECT message_id FROM `+id("dead_letters")+` WHERE id = 10000500`).Scan(&deadMsgID))
	// The continuation of the key's lookup past its first 10,000 records.
	var first struct {
		NextAfter *string `json:"next_after"`
	}
	resp, err := http.Get(srv.URL + "/api/v1/records?message_id=" + msgID + "&key=" + key)
	require.NoError(b, err)
	require.NoError(b, json.NewDecoder(resp.Body).Decode(&first))
	resp.Body.Close()
	next := "0"
	if first.NextAfter != nil {
		next = *first.NextAfter
	}
	calls := []struct {
		name, path string
		fresh      bool // forget the backlog first: every call reads it
	}{
		{"status", "/api/v1/status", false},
		{"status-backlog-read", "/api/v1/status", true},
		{"history", "/api/v1/history", false},
		{"partitions", "/api/v1/partitions", false},
		{"partitions-backlog-read", "/api/v1/partitions", true},
		{"stuck-keys", "/api/v1/stuck-keys", false},
		{"dead-letters", "/api/v1/dead-letters", false},
		{"dead-letters-error-filter", "/api/v1/dead-letters?error=no+exchange", false},
		{"dead-letter-detail", "/api/v1/dead-letters/10000500", false},
		{"lookup-id", fmt.Sprintf("/api/v1/records?id=%d", recID), false},
		{"lookup-key", "/api/v1/records?key=" + key, false},
		{"lookup-message-id-with-key", "/api/v1/records?message_id=" + msgID + "&key=" + key, false},
		{"lookup-message-id-with-key-next", "/api/v1/records?message_id=" + msgID + "&key=" + key + "&after=" + next, false},
		{"lookup-message-id", "/api/v1/records?message_id=" + msgID, false},
		{"lookup-dead-message-id", "/api/v1/records?message_id=" + deadMsgID, false},
	}
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				if c.fresh {
					con.forgetPartitions()
				}
				t0 := time.Now()
				resp, err := http.Get(srv.URL + c.path)
				require.NoError(b, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(b, err)
				require.Equal(b, http.StatusOK, resp.StatusCode, "%s", body)
				lat = append(lat, time.Since(t0))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
			b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
		})
	}
	if os.Getenv("POSTRELAY_EXPLAIN") == "1" {
		explain(b, con, key, msgID, recID)
	}
}

// explain logs the plan of each read statement on the loaded tables.
func explain(b *testing.B, c *Console, key, msgID string, recID int64) {
	ctx := context.Background()
	s := c.store
	parts := make([]int32, 64)
	for i := range parts {
		parts[i] = int32(i)
	}
	p := engine.Partition(key, 64)
	for _, q := range []struct {
		name string
		sql  string
		args []any
	}{
		{"partitions", s.sqlPartitions, []any{pendingCap(64) + 1}},
		{"instances", s.sqlInstances, nil},
		{"dead count", s.sqlDeadCount, []any{DeadLetterCountCap + 1}},
		{"counters", s.sqlCounters, []any{s.schema}},
		{"stuck keys", s.sqlStuck, []any{heldScan, -1, "", "", limitDefault, waitingWindow}},
		{"dead list", s.sqlDeadList, []any{int64(1) << 62, deadWindow, "", "", "", limitDefault}},
		{"dead list, error filter", s.sqlDeadList, []any{int64(1) << 62, deadWindow, "", "", "no exchange", limitDefault}},
		{"dead window end", s.sqlDeadWindowEnd, []any{int64(1) << 62, deadWindow}},
		{"dead one", s.sqlDeadOne, []any{int64(10000500), payloadShowMax}},
		{"lookup id", s.sqlLookupID, []any{recID, parts}},
		{"lookup scan window", s.sqlScanWindow, []any{p, 0, recordScan}},
		{"lookup key in window", s.sqlLookupWindow, []any{p, 0, int64(1) << 62, key, "", limitDefault}},
		{"lookup message id in window", s.sqlLookupWindow, []any{p, 0, int64(1) << 62, "", msgID, limitDefault}},
		{"lookup message id in the heads", s.sqlLookupHeads, []any{msgID, recordScan / 64, heldScan, limitDefault}},
		{"partitions beyond the heads", s.sqlHeadsBeyond, []any{recordScan / 64}},
		{"dead letters of a key", s.sqlDeadByKey, []any{key, deadWindow, limitDefault}},
		{"dead letters of a message id", s.sqlDeadByMessage, []any{msgID, limitDefault}},
	} {
		rows, err := c.pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) "+q.sql, q.args...)
		require.NoError(b, err, q.name)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(b, err, q.name)
		b.Logf("== %s\n%s", q.name, strings.Join(lines, "\n"))
	}
}
