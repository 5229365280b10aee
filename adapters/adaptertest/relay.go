package adaptertest

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// Relay conformance sizes: RelayConformance writes RelayTransactions
// transactions of RelayRecordsPerTx records over RelayKeys keys; every
// fourth transaction (the 2nd, 6th, ...) rolls back. It waits at most
// RelayTimeout for the deliveries.
const (
	RelayTransactions  = 12
	RelayRecordsPerTx  = 5
	RelayKeys          = 3
	RelayTimeout       = 60 * time.Second
	relayRollbackEvery = 4
)

// RelayConfig is the engine configuration RelayConformance starts from:
// short intervals so the suite is fast. Schema is set per test.
func RelayConfig() engine.Config {
	return engine.Config{
		Partitions:        8,
		HeartbeatInterval: 100 * time.Millisecond,
		LeaseTTL:          time.Second,
		PollInterval:      200 * time.Millisecond,
		RetryInitial:      50 * time.Millisecond,
	}
}

// RelayConformance checks b end to end: records written with
// engine.Writer in real PostgreSQL transactions (a fresh schema, some
// transactions rolled back), relayed by engine.New(pool, publisher,
// cfg).Run to b's publisher (adapters.NewPublisher), arrive at b's own
// subscriber: every committed record, and no rolled-back one; message UUID
// = record MessageID; payload (binary, with zero bytes) and metadata
// intact; for each key, first deliveries in write order. Duplicates are
// allowed (at least once). configure, if given, adjusts RelayConfig()
// before Migrate.
func RelayConformance(t *testing.T, b Broker, configure ...func(*engine.Config)) {
	t.Helper()
	topic := Topic("relay_" + b.Name)
	pub, msgs := b.Open(t, topic)

	pool, schema := pgtest.FreshSchema(t)
	cfg := RelayConfig()
	for _, f := range configure {
		f(&cfg)
	}
	cfg.Schema = schema
	ctx := t.Context()
	if err := engine.Migrate(ctx, pool, cfg); err != nil {
		t.Fatalf("%s: migrate: %v", b.Name, err)
	}
	eng, err := engine.New(pool, pub, cfg)
	if err != nil {
		t.Fatalf("%s: new engine: %v", b.Name, err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("%s: engine run: %v", b.Name, err)
		}
	})

	w := engine.NewWriter(cfg)
	committed := map[string]engine.Record{}
	rolledBack := map[string]bool{}
	for i := range RelayTransactions {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatalf("%s: begin: %v", b.Name, err)
		}
		recs := make([]engine.Record, RelayRecordsPerTx)
		for j := range recs {
			recs[j] = engine.Record{
				Topic: topic,
				Key:   "key-" + strconv.Itoa(j%RelayKeys),
				// ≤ 36 characters: watermill-sql keeps the UUID in a VARCHAR(36).
				MessageID: fmt.Sprintf("%s-%02d-%d", topic[len(topic)-10:], i, j),
				Payload:   []byte{0, 1, 2, byte(i), byte(j), 0xff, 0},
				Metadata:  map[string]string{"tenant": "acme", "tx": strconv.Itoa(i), "note": "ünïcode ✓, = & spaces"},
			}
		}
		if err := w.Write(ctx, tx, recs...); err != nil {
			_ = tx.Rollback(ctx)
			t.Fatalf("%s: write: %v", b.Name, err)
		}
		if i%relayRollbackEvery == 1 {
			if err := tx.Rollback(ctx); err != nil {
				t.Fatalf("%s: rollback: %v", b.Name, err)
			}
			for _, r := range recs {
				rolledBack[r.MessageID] = true
			}
			continue
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("%s: commit: %v", b.Name, err)
		}
		for _, r := range recs {
			committed[r.MessageID] = r
		}
	}

	got := map[string]bool{}
	lastID := map[string]int64{}
	check := func(m *message.Message) {
		m.Ack()
		if rolledBack[m.UUID] {
			t.Fatalf("%s: message %s of a rolled-back transaction was delivered", b.Name, m.UUID)
		}
		want, ok := committed[m.UUID]
		if !ok {
			t.Fatalf("%s: received message %q that was never written", b.Name, m.UUID)
		}
		if got[m.UUID] {
			return // a duplicate: allowed, at least once
		}
		got[m.UUID] = true
		if !bytes.Equal(want.Payload, m.Payload) {
			t.Fatalf("%s: message %s payload %x, want %x", b.Name, m.UUID, []byte(m.Payload), want.Payload)
		}
		for k, v := range want.Metadata {
			if m.Metadata.Get(k) != v {
				t.Fatalf("%s: message %s metadata %q = %q, want %q (all: %v)", b.Name, m.UUID, k, m.Metadata.Get(k), v, m.Metadata)
			}
		}
		if k := m.Metadata.Get(engine.MetadataKey); k != want.Key {
			t.Fatalf("%s: message %s metadata %s = %q, want %q", b.Name, m.UUID, engine.MetadataKey, k, want.Key)
		}
		id, err := strconv.ParseInt(m.Metadata.Get(engine.MetadataRecordID), 10, 64)
		if err != nil {
			t.Fatalf("%s: message %s: metadata %s: %v", b.Name, m.UUID, engine.MetadataRecordID, err)
		}
		if id <= lastID[want.Key] {
			t.Fatalf("%s: key %s: record %d first delivered after record %d", b.Name, want.Key, id, lastID[want.Key])
		}
		lastID[want.Key] = id
	}
	deadline := time.After(RelayTimeout)
	for len(got) < len(committed) {
		select {
		case m := <-msgs:
			check(m)
		case <-deadline:
			missing := maps.Clone(committed)
			for id := range got {
				delete(missing, id)
			}
			t.Fatalf("%s: %d of %d committed records arrived within %s; missing %v", b.Name, len(got), len(committed), RelayTimeout, slices.Sorted(maps.Keys(missing)))
		}
	}

	// Every record has been relayed and completed (the records table is
	// empty); whatever else is already queued at the subscriber must be a
	// duplicate, never a rolled-back record.
	records := pgx.Identifier{schema, "records"}.Sanitize()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+records).Scan(&n); err != nil {
			t.Fatalf("%s: count records: %v", b.Name, err)
		}
		if n == 0 {
			break
		}
		select {
		case m := <-msgs:
			check(m)
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: %d records still pending after every one arrived", b.Name, n)
		}
	}
	for {
		select {
		case m := <-msgs:
			check(m)
			continue
		default:
		}
		break
	}
}
