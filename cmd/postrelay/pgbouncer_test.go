package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// PgBouncer in front of the test database, as .ci/pgbouncer starts it:
// session pooling on 6432, transaction pooling on 6433.
const (
	pgbouncerSessionAddr     = "127.0.0.1:6432"
	pgbouncerTransactionAddr = "127.0.0.1:6433"
)

// pgbouncerURL is the test database URL through the PgBouncer at addr; the
// test fails, saying how to start it, when nothing answers there.
func pgbouncerURL(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("PgBouncer is not running on %s: %v; start it with: .ci/pgbouncer", addr, err)
	}
	_ = conn.Close()
	return strings.Replace(pgtest.URL(), "127.0.0.1:5432", addr, 1)
}

// pgbouncerModes are the relay flags for each pooling mode. Each relay
// keeps to 2 + 3 connections (+1 LISTEN) so that the session pool (40
// server connections) holds every relay of the tests running at once.
func pgbouncerModes(t *testing.T) map[string][]string {
	small := []string{"--pool-conns", "2", "--delivery-conns", "3"}
	return map[string][]string{
		// Session pooling: everything as direct, LISTEN included.
		"session": append([]string{"--database-url", pgbouncerURL(t, pgbouncerSessionAddr)}, small...),
		// Transaction pooling: no session state; LISTEN on a direct
		// connection.
		"transaction": append([]string{"--database-url", pgbouncerURL(t, pgbouncerTransactionAddr),
			"--pooler", "transaction", "--listen-url", pgtest.URL()}, small...),
	}
}

// The SIGKILL test (takeover within the lease TTL, nothing lost, order per
// key) with every relay connected through PgBouncer. The survivors'
// heartbeat and lease statements take the pooler's extra hop (and are
// planned on every execution in transaction mode): the takeover may take
// one heartbeat more than direct (2.625 s against the direct bound of
// 2.6 s was measured on the loaded shared machine).
func TestProcessesSurviveKill9ThroughPgBouncer(t *testing.T) {
	// Not parallel: it holds tens of connections (through PgBouncer, up to
	// its pool size of server connections); beside the other process tests
	// it went past PostgreSQL's default max_connections of 100.
	for mode, flags := range pgbouncerModes(t) {
		t.Run(mode, func(t *testing.T) {
			testProcessesSurviveKill9(t, fmt.Sprintf("sigkill_takeover_pgbouncer_%s", mode), 1, flags...)
		})
	}
}

// The fencing test (a relay frozen past its lease commits nothing after it
// resumes; nothing lost, order per key) through PgBouncer.
func TestFrozenRelayIsFencedThroughPgBouncer(t *testing.T) {
	// Not parallel: it holds tens of connections (through PgBouncer, up to
	// its pool size of server connections); beside the other process tests
	// it went past PostgreSQL's default max_connections of 100.
	for mode, flags := range pgbouncerModes(t) {
		t.Run(mode, func(t *testing.T) {
			testFrozenRelayIsFenced(t, fmt.Sprintf("sigstop_fencing_pgbouncer_%s", mode), flags...)
		})
	}
}
