package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// A relay whose role PostgreSQL refuses connections to (the role's
// CONNECTION LIMIT, as a full connection table would with "too many
// clients") does not exit: it waits with backoff while it has none,
// relays with the few it gets, and once connections free up opens the
// rest (its LISTEN connection among them) — nothing lost, order per key.
func TestRelayRidesOutConnectionLimit(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ctx := context.Background()
	var b [4]byte
	_, _ = rand.Read(b[:])
	role := "prl_" + hex.EncodeToString(b[:])
	roleID := pgx.Identifier{role}.Sanitize()
	schemaID := pgx.Identifier{c.cfg.Schema}.Sanitize()
	for _, sql := range []string{
		"CREATE ROLE " + roleID + " LOGIN CONNECTION LIMIT 0",
		"GRANT USAGE ON SCHEMA " + schemaID + " TO " + roleID,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA " + schemaID + " TO " + roleID,
	} {
		_, err := c.pool.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	t.Cleanup(func() { // after the relays are killed (cleanups run last first)
		_, _ = c.pool.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
		_, _ = c.pool.Exec(ctx, "DROP OWNED BY "+roleID)
		if _, err := c.pool.Exec(ctx, "DROP ROLE "+roleID); err != nil {
			t.Logf("drop role %s: %v", role, err)
		}
	})
	limit := func(n int) {
		_, err := c.pool.Exec(ctx, fmt.Sprintf("ALTER ROLE %s CONNECTION LIMIT %d", roleID, n))
		require.NoError(t, err)
	}
	conns := func(query string) int {
		var n int
		require.NoError(t, c.pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND query LIKE $2",
			role, query).Scan(&n))
		return n
	}
	url := strings.Replace(pgtest.URL(), "postgres://postgres@", "postgres://"+role+"@", 1)
	require.NotEqual(t, pgtest.URL(), url, "the test database URL must name its user as postgres://postgres@")
	// Its budget: 2 + 5 delivery + 1 LISTEN = 8 connections.
	c.args = append(c.args, "--database-url", url, "--pool-conns", "2", "--delivery-conns", "5")

	w := c.startWriter(20, 5*time.Millisecond)
	r := c.start("limited")
	// No connection at all: it keeps retrying, and does not exit.
	waitFor(t, 20*time.Second, "the relay reports the refused connections", func() bool {
		return strings.Contains(r.log(), "too many connections for role") && strings.Contains(r.log(), "retrying")
	})
	select {
	case <-r.exited:
		t.Fatalf("the relay exited while PostgreSQL refused its connections: %v; log:\n%s", r.err, r.log())
	case <-time.After(3 * time.Second): // three seconds of refusals (backoff to 1.6 s)
	}
	require.Empty(t, c.deliveries())

	// Three of its eight connections: it relays with those.
	limit(3)
	waitFor(t, 60*time.Second, "deliveries flow on 3 connections", func() bool { return c.unique() > 200 })
	// Which of its connections got the three slots is a race (the LISTEN
	// connection retries with backoff, the pools open theirs on demand):
	// either way it relays, and whatever was refused opens once there is
	// room.
	t.Logf("at a limit of 3: LISTEN connection open: %d", conns("LISTEN%"))

	// Room for all: the LISTEN connection (restarted with backoff) opens.
	limit(20)
	took := waitFor(t, 60*time.Second, "the LISTEN connection opens once there is room", func() bool { return conns("LISTEN%") == 1 })
	t.Logf("LISTEN connection open %v after the limit was raised", took.Round(time.Millisecond))
	at := c.unique()
	waitFor(t, 30*time.Second, "deliveries continue", func() bool { return c.unique() > at+200 })
	w.stop()
	delivered, dups := c.verify(w, 60*time.Second)
	t.Logf("connection limit 0 → 3 → 20: %d committed records delivered, %d duplicates", delivered, dups)
	faultSummary{name: "connection_limit", records: len(w.committed), rolledBack: len(w.rolledBack), faults: "conn_limit:2",
		duplicates: dups, recovery: "listen=" + took.Round(10*time.Millisecond).String(),
		note: "the relay's role limited to 0 then 3 of its 8 connections, then 20; it waited, relayed on 3, then reopened LISTEN"}.log(t)
	c.stop(r)
}
