package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// poisonMaxAttempts is --max-attempts in the poison test.
const poisonMaxAttempts = 3

// Poison records mixed into a continuous load on three relay processes:
// the broker is postgres:// with a JSON payload column, which PostgreSQL
// itself refuses for a payload that is not JSON, so every attempt at a
// poison record fails. Every poison record ends in dead_letters after
// exactly --max-attempts attempts and is never delivered; every other
// committed record is delivered, none rolled back is, order per key of
// first deliveries holds, and the records of a poison record's key written
// after it are published only once it has been dead-lettered (the engine
// holds the key while the record is retried, then lets the rest through).
func TestPoisonRecordsUnderLoad(t *testing.T) {
	t.Parallel()
	cfgFile := filepath.Join(t.TempDir(), "broker.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("sql:\n  payload_type: json\n"), 0o600))
	c := newCluster(t, "--config", cfgFile, "--max-attempts", fmt.Sprint(poisonMaxAttempts))
	c.poison = func(i, j int) bool { return (i*3+j)%67 == 5 } // about 1.5 % of the records
	live := []*relay{c.start("x0"), c.start("x1"), c.start("x2")}
	w := c.startWriter(40, 5*time.Millisecond)
	deadLetters := pgx.Identifier{c.cfg.Schema, "dead_letters"}.Sanitize()
	countDead := func() int {
		var n int
		require.NoError(t, c.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+deadLetters).Scan(&n))
		return n
	}
	waitFor(t, 60*time.Second, "deliveries flow and poison records are dead-lettered", func() bool {
		return c.unique() > 1500 && countDead() >= 10
	})
	w.stop()
	delivered, dups := c.verify(w, 60*time.Second)
	waitFor(t, 60*time.Second, "every committed poison record dead-lettered", func() bool { return countDead() >= len(w.poison) })

	// Exactly the committed poison records are dead letters, each after
	// exactly --max-attempts attempts, with the broker's refusal as error.
	rows, err := c.pool.Query(context.Background(), "SELECT message_id, attempts, coalesce(last_error, '') FROM "+deadLetters)
	require.NoError(t, err)
	var id, lastErr string
	var attempts int
	dead := map[string]bool{}
	_, err = pgx.ForEachRow(rows, []any{&id, &attempts, &lastErr}, func() error {
		require.True(t, w.poison[id], "dead letter %s is not a committed poison record", id)
		require.Equal(t, poisonMaxAttempts, attempts, "attempts of dead letter %s", id)
		require.Contains(t, lastErr, "json", "last error of dead letter %s", id)
		dead[id] = true
		return nil
	})
	require.NoError(t, err)
	require.Len(t, dead, len(w.poison))

	// A poison record holds its key: every record of that key written after
	// it reaches the broker after the poison record moved to dead_letters.
	// Both times are the database clock (watermill-sql's created_at is the
	// publishing transaction's start; dead_lettered_at the completing one's).
	var later, early int
	require.NoError(t, c.pool.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE m.created_at <= d.dead_lettered_at::timestamp)
		FROM `+deadLetters+` d JOIN `+pgx.Identifier{"watermill_" + c.topic}.Sanitize()+` m
		ON m.metadata->>'postrelay_key' = d.key AND (m.metadata->>'postrelay_record_id')::bigint > d.id`).Scan(&later, &early))
	require.Positive(t, later, "no record of a poison key was written after the poison record")
	require.Zero(t, early, "records of a poison key published before the poison record was dead-lettered")

	for _, r := range live {
		c.stop(r)
	}
	t.Logf("poison: %d committed records delivered (%d distinct on the broker), %d rolled back never delivered, %d duplicates; %d poison records dead-lettered after exactly %d attempts each, none delivered; %d later records of their keys published only after the dead-lettering",
		len(w.committed), delivered, len(w.rolledBack), dups, len(dead), poisonMaxAttempts, later)
	faultSummary{name: "poison_records", records: len(w.committed), rolledBack: len(w.rolledBack),
		faults: fmt.Sprintf("poison:%d", len(dead)), duplicates: dups, recovery: "-",
		note: fmt.Sprintf("3 relays; every poison record dead-lettered after exactly %d attempts; %d later records of poison keys waited for it", poisonMaxAttempts, later)}.log(t)
}
