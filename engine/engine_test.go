package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

func TestDeliversEveryCommittedRecordAndNoRolledBackOne(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := start(t, b, b.cfg, b.pub)

	const writers, txs = 8, 40
	var mu sync.Mutex
	committed := map[string]bool{}
	rolledBack := map[string]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range txs {
				n := 1 + rng.IntN(5)
				recs := make([]engine.Record, n)
				ids := make([]string, n)
				for j := range recs {
					ids[j] = uuid.NewString()
					recs[j] = engine.Record{
						// Each writer has its own keys: order per key is
						// insertion order, and two concurrent transactions
						// writing one key do not serialize (see README).
						Topic: "orders", Key: fmt.Sprintf("w%d-k%d", w, rng.IntN(5)),
						Payload: fmt.Appendf(nil, "w%d-%d-%d", w, i, j), MessageID: ids[j],
					}
				}
				commit := rng.IntN(5) != 0
				writeTx(t, b, commit, recs...)
				mu.Lock()
				for _, id := range ids {
					if commit {
						committed[id] = true
					} else {
						rolledBack[id] = true
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.NotEmpty(t, rolledBack)

	require.NoError(t, b.pub.WaitForAll(30*time.Second, committed, b.whereabouts))
	ds := b.pub.Deliveries()
	for _, d := range ds {
		require.False(t, rolledBack[d.UUID], "rolled-back record %s was delivered", d.UUID)
		require.True(t, committed[d.UUID], "unknown record %s delivered", d.UUID)
		require.Equal(t, "orders", d.Topic)
	}
	require.NoError(t, recorder.CheckKeyOrder(ds))
	// Completion is committed right after publish; wait for the table to empty.
	waitCond(t, 10*time.Second, func() bool { return count(t, b, "records") == 0 })
	require.Zero(t, r.eng.DroppedEvents())
}

func TestMessageCarriesUUIDPayloadAndMetadata(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start(t, b, b.cfg, b.pub)
	id := uuid.NewString()
	writeTx(t, b, true, engine.Record{
		Topic: "payments", Key: "acct-1", Payload: []byte(`{"amount":42}`),
		Metadata: map[string]string{"tenant": "acme", "quote": `a"b`}, MessageID: id,
	})
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 1 }))
	d := b.pub.Deliveries()[0]
	require.Equal(t, id, d.UUID)
	require.Equal(t, `{"amount":42}`, d.Payload)
	require.Equal(t, "acme", d.Metadata["tenant"])
	require.Equal(t, `a"b`, d.Metadata["quote"])
	require.Equal(t, "acct-1", d.Metadata[engine.MetadataKey])
	require.Equal(t, "1", d.Metadata[engine.MetadataAttempt])
	require.Equal(t, fmt.Sprint(engine.Partition("acct-1", 16)), d.Metadata[engine.MetadataPartition])
}

func TestPoisonRecordIsRetriedThenDeadLetteredWhileOthersFlow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.MaxAttempts = 3
	// Retries 1 s apart: the good records, written after the poison one,
	// must go out before its last attempt even when a write takes most of
	// a second (load average 15-19 on the shared 2-core host).
	cfg.RetryInitial, cfg.RetryMax, cfg.RetryJitter = time.Second, time.Second, engine.NoJitter
	poisonErr := errors.New("broker rejects poison")
	var mu sync.Mutex
	var poisonAttempts []time.Time
	b.pub.SetFail(func(_ string, m *message.Message) error {
		if string(m.Payload) == "poison" {
			mu.Lock()
			poisonAttempts = append(poisonAttempts, time.Now())
			mu.Unlock()
			return poisonErr
		}
		return nil
	})
	r := start(t, b, cfg, b.pub)

	writeTx(t, b, true, engine.Record{Topic: "t", Key: "bad", Payload: []byte("poison"), MessageID: "poison-1"})
	writeTx(t, b, true, rec("t", "bad", 2)) // same key: must wait behind the poison record
	good := make([]engine.Record, 50)
	for i := range good {
		good[i] = rec("t", fmt.Sprintf("good-%d", i%5), i)
	}
	writeTx(t, b, true, good...)
	// Other keys flow while the poison record is retried.
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) >= 50 }))

	var fails []engine.Event
	dead := r.waitEvent(t, 10*time.Second, func(e engine.Event) bool {
		if e.Kind == engine.EventFailed && e.MessageID == "poison-1" {
			fails = append(fails, e)
		}
		return e.Kind == engine.EventDeadLettered
	})
	require.Equal(t, "poison-1", dead.MessageID)
	require.Equal(t, 3, dead.Attempt)
	require.ErrorIs(t, dead.Err, poisonErr)
	require.Len(t, fails, 2)
	require.Equal(t, 1, fails[0].Attempt)
	require.Equal(t, 2, fails[1].Attempt)
	require.Greater(t, fails[1].Delay, time.Duration(0))

	// The record behind it is delivered once the poison one is out of the
	// way, and every good record went out while the poison one was retried.
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool {
		for _, d := range ds {
			if d.Payload == "bad-2" {
				return true
			}
		}
		return false
	}))
	mu.Lock()
	require.Len(t, poisonAttempts, 3)
	last := poisonAttempts[2]
	mu.Unlock()
	for _, d := range b.pub.Deliveries() {
		if d.Key == "bad" {
			require.True(t, d.At.After(last), "bad-2 published before the poison record was dead-lettered")
		} else {
			require.True(t, d.At.Before(last), "good record %s waited for the poison record", d.Payload)
		}
	}

	admin := engine.NewAdmin(b.pool, b.cfg)
	dl, err := admin.DeadLetters(context.Background(), engine.DeadLetterQuery{})
	require.NoError(t, err)
	require.Len(t, dl, 1)
	require.Equal(t, "poison-1", dl[0].MessageID)
	require.Equal(t, 3, dl[0].Attempts)
	require.Contains(t, dl[0].LastError, "broker rejects poison")

	// Requeue delivers it once the broker accepts it.
	b.pub.SetFail(nil)
	n, err := admin.Requeue(context.Background(), engine.DeadLetterQuery{IDs: []int64{dl[0].ID}})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool {
		return recorder.UniqueUUIDs(ds)["poison-1"] == 1
	}))
	require.Zero(t, count(t, b, "dead_letters"))
}

func TestDelayedRecordWaitsAndHoldsItsKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := start(t, b, b.cfg, b.pub)
	// Write once the engine holds its partitions: written earlier, with a
	// start-up longer than the delay both records would be due at once and
	// their order up to the scheduler.
	for range b.cfg.Partitions {
		r.waitEvent(t, 10*time.Second, func(e engine.Event) bool { return e.Kind == engine.EventLeaseAcquired })
	}
	// The delay must outlast the write and the delivery of "free" on a
	// loaded machine (a write took up to 1 s on the shared 2-core host).
	const delay = 2 * time.Second
	written := time.Now()
	writeTx(t, b, true,
		engine.Record{Topic: "t", Key: "k", Payload: []byte("delayed"), DeliverAfter: delay},
		engine.Record{Topic: "t", Key: "k", Payload: []byte("after")},
		engine.Record{Topic: "t", Key: "other", Payload: []byte("free")},
	)
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 3 }))
	ds := b.pub.Deliveries()
	require.Equal(t, "free", ds[0].Payload)
	require.Equal(t, "delayed", ds[1].Payload)
	require.Equal(t, "after", ds[2].Payload)
	// The database clock started the delay at the transaction's start, which
	// was after `written` was taken.
	require.GreaterOrEqual(t, ds[1].At.Sub(written), delay-50*time.Millisecond)
}

func TestSQLEnqueueAgreesWithGoPartitioning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	keys := []string{"", "a", "ab", "abc", "abcd", "abcde", "hello", "привет", "🚀", "new-checkout:2026-q3:ünïcødé"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		n := rng.IntN(40)
		buf := make([]rune, n)
		for i := range buf {
			buf[i] = rune(32 + rng.IntN(0x2000))
		}
		keys = append(keys, string(buf))
	}
	fn := pgx.Identifier{b.cfg.Schema, "partition_for"}.Sanitize()
	for _, k := range keys {
		var p int
		require.NoError(t, b.pool.QueryRow(ctx, "SELECT "+fn+"($1)", k).Scan(&p))
		require.Equal(t, engine.Partition(k, 16), p, "key %q", k)
		var h int64
		require.NoError(t, b.pool.QueryRow(ctx, "SELECT "+pgx.Identifier{b.cfg.Schema, "murmur3_32"}.Sanitize()+"($1)", k).Scan(&h))
		require.Equal(t, int64(engine.Murmur3([]byte(k))), h, "key %q", k)
	}

	// Records enqueued from SQL are delivered, after the Go writer's, in order.
	start(t, b, b.cfg, b.pub)
	enq := pgx.Identifier{b.cfg.Schema, "enqueue"}.Sanitize()
	writeTx(t, b, true, rec("t", "mixed", 1))
	_, err := b.pool.Exec(ctx, "SELECT "+enq+"('t', 'mixed', 'from-sql'::bytea, '{\"n\": 2, \"s\": \"x\"}')")
	require.NoError(t, err)
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 2 }))
	ds := b.pub.Deliveries()
	require.Equal(t, "mixed-1", ds[0].Payload)
	require.Equal(t, "from-sql", ds[1].Payload)
	require.Equal(t, "2", ds[1].Metadata["n"])
	require.Equal(t, "x", ds[1].Metadata["s"])

	_, err = b.pool.Exec(ctx, "SELECT "+enq+"('', 'k', 'x'::bytea)")
	require.ErrorContains(t, err, "topic must not be empty")
	_, err = b.pool.Exec(ctx, "SELECT "+enq+"('t', 'k', NULL)")
	require.ErrorContains(t, err, "payload must not be NULL")
}

func TestGracefulStopReleasesLeasesAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.LeaseTTL = 5 * time.Second // far longer than the takeover we expect
	cfgA, cfgB := cfg, cfg
	cfgA.InstanceID, cfgB.InstanceID = "a", "b"
	a := start(t, b, cfgA, b.pub)
	owned := map[int]bool{}
	for len(owned) < 16 {
		e := a.waitEvent(t, 10*time.Second, func(e engine.Event) bool { return e.Kind == engine.EventLeaseAcquired })
		owned[e.Partition] = true
	}
	bEng := start(t, b, cfgB, b.pub)
	// b joins and gets some partitions; wait until both own some.
	e := bEng.waitEvent(t, 10*time.Second, func(e engine.Event) bool { return e.Kind == engine.EventLeaseAcquired })
	require.Equal(t, "b", e.Instance)

	stopped := time.Now()
	require.NoError(t, a.stop())
	// Every partition a held is released and taken by b well before the TTL.
	waitCond(t, 10*time.Second, func() bool {
		var n int
		require.NoError(t, b.pool.QueryRow(context.Background(),
			"SELECT count(*) FROM "+pgx.Identifier{cfg.Schema, "partitions"}.Sanitize()+" WHERE owner = 'b'").Scan(&n))
		return n == 16
	})
	took := time.Since(stopped)
	require.Less(t, took, cfg.LeaseTTL, "takeover after graceful stop took %v", took)
	t.Logf("takeover after graceful stop: %v (lease TTL %v)", took, cfg.LeaseTTL)

	// And the records keep flowing through b.
	writeTx(t, b, true, rec("t", "x", 1))
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 1 }))
}

func TestOrderHoldsAcrossRebalancingAndRetries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Every 7th attempt fails, so retries are mixed into the run.
	var mu sync.Mutex
	n := 0
	b.pub.SetFail(func(string, *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n%7 == 0 {
			return errors.New("transient")
		}
		return nil
	})
	ids := make(chan string, 100000)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() }) // writers stop before the pool closes, also on failure
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				id := uuid.NewString()
				writeTx(t, b, true, engine.Record{Topic: "t", Key: fmt.Sprintf("w%d-k%d", w, i%6), Payload: []byte("x"), MessageID: id})
				ids <- id
			}
		})
	}
	engines := []*running{}
	for i := range 3 {
		cfg := b.cfg
		cfg.InstanceID = fmt.Sprintf("inst-%d", i)
		engines = append(engines, start(t, b, cfg, b.pub))
		require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) >= 100*(i+1) }))
	}
	require.NoError(t, engines[0].stop())
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) >= 500 }))
	require.NoError(t, engines[1].stop())
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) >= 700 }))
	cancel()
	wg.Wait()
	close(ids)
	want := map[string]bool{}
	for id := range ids {
		want[id] = true
	}
	require.NoError(t, b.pub.WaitForAll(30*time.Second, want, b.whereabouts))
	require.NoError(t, recorder.CheckKeyOrder(b.pub.Deliveries()))
}

func TestBadInputGetsClearErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()

	err = b.writer.Write(ctx, tx, engine.Record{Topic: "", Key: "k", Payload: []byte("x")})
	require.ErrorIs(t, err, engine.ErrInvalidRecord)
	require.ErrorContains(t, err, "topic is empty")

	err = b.writer.Write(ctx, tx, engine.Record{Topic: "t", Key: "k"})
	require.ErrorIs(t, err, engine.ErrInvalidRecord)
	require.ErrorContains(t, err, "payload is nil")

	small := b.cfg
	small.MaxPayloadBytes = 10
	err = engine.NewWriter(small).Write(ctx, tx, engine.Record{Topic: "t", Payload: make([]byte, 11)})
	require.ErrorContains(t, err, "payload is 11 bytes, more than MaxPayloadBytes (10)")

	var noTx pgx.Tx // a wrong type no longer compiles; nil is refused
	err = b.writer.Write(ctx, noTx, rec("t", "k", 1))
	require.ErrorIs(t, err, engine.ErrUnsupportedTx)
	require.ErrorContains(t, err, "tx is nil")

	bad := b.cfg
	bad.Schema = "Robert'); DROP TABLE students;--"
	err = engine.NewWriter(bad).Write(ctx, tx, rec("t", "k", 1))
	require.ErrorIs(t, err, engine.ErrInvalidConfig)
	require.ErrorContains(t, err, "Schema")

	_, err = engine.New(b.pool, b.pub, engine.Config{Partitions: 5000})
	require.ErrorContains(t, err, "Partitions = 5000")
	_, err = engine.New(b.pool, nil, engine.Config{})
	require.ErrorContains(t, err, "publisher is nil")

	// Running against a schema that was never migrated fails at once.
	other := b.cfg
	other.Schema = "never_migrated_schema"
	eng, err := engine.New(b.pool, b.pub, other)
	require.NoError(t, err)
	err = eng.Run(ctx)
	require.ErrorIs(t, err, engine.ErrNotMigrated)
	require.ErrorContains(t, err, "never_migrated_schema")
}

func waitCond(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		<-tick.C
	}
}

func TestPublishConcurrencyIsBoundedByMaxInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ lanes, inFlight, wantMax int }{
		{1, 0, 0}, // one partition, strictly sequential: one publish at a time
		{8, 3, 3}, // keys in parallel, capped per instance
	} {
		t.Run(fmt.Sprintf("lanes=%d,inflight=%d", tc.lanes, tc.inFlight), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.pub.SetDelay(5 * time.Millisecond)
			cfg := b.cfg
			cfg.Partitions = 1
			pool, schema := b.pool, b.cfg.Schema+"_one"
			cfg.Schema = schema
			require.NoError(t, engine.Migrate(context.Background(), pool, cfg))
			t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
			b.cfg, b.writer = cfg, engine.NewWriter(cfg)
			cfg.PublishConcurrency, cfg.MaxInFlight = tc.lanes, tc.inFlight
			recs := make([]engine.Record, 200)
			for i := range recs {
				recs[i] = rec("t", fmt.Sprintf("k%d", i%20), i)
			}
			writeTx(t, b, true, recs...)
			start(t, b, cfg, b.pub)
			require.NoError(t, b.pub.WaitFor(30*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 200 }))
			require.NoError(t, recorder.CheckKeyOrder(b.pub.Deliveries()))
			if tc.wantMax == 0 {
				require.Equal(t, 1, b.pub.MaxInFlight())
			} else {
				require.Equal(t, tc.wantMax, b.pub.MaxInFlight())
			}
		})
	}
}

func TestPublishTimeoutEndsAHangingAttemptAndTheNextAttemptsRunLive(t *testing.T) {
	t.Parallel()
	// One partition, whose actor publishes in id order on its own
	// goroutine: the records after the hanging one are published by the
	// goroutine whose attempt timed out.
	pool, schema := pgtest.FreshSchema(t)
	cfg := fastConfig(schema)
	cfg.Partitions, cfg.PublishConcurrency = 1, 1
	require.NoError(t, engine.Migrate(context.Background(), pool, cfg))
	b := &bundle{pool: pool, cfg: cfg, writer: engine.NewWriter(cfg), pub: recorder.New()}
	cfg.PublishTimeout = 200 * time.Millisecond
	cfg.RetryInitial, cfg.RetryMax, cfg.RetryJitter = 50*time.Millisecond, 50*time.Millisecond, engine.NoJitter
	var mu sync.Mutex
	hung := false
	var hangErr error
	var hangFor time.Duration
	var deadAtPublish []string // records whose context was done when their Publish began
	b.pub.SetFail(func(_ string, m *message.Message) error {
		ctx := m.Context()
		if ctx.Err() != nil {
			mu.Lock()
			deadAtPublish = append(deadAtPublish, string(m.Payload))
			mu.Unlock()
		}
		if string(m.Payload) != "hang" {
			return nil
		}
		mu.Lock()
		first := !hung
		hung = true
		mu.Unlock()
		if !first {
			return nil
		}
		d, ok := ctx.Deadline()
		require.True(t, ok, "the message context carries the attempt's deadline")
		started := time.Now()
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
		}
		mu.Lock()
		hangErr, hangFor = ctx.Err(), time.Since(started)
		mu.Unlock()
		require.WithinDuration(t, started.Add(cfg.PublishTimeout), d, 100*time.Millisecond)
		return ctx.Err()
	})
	r := start(t, b, cfg, b.pub)

	recs := []engine.Record{{Topic: "t", Key: "a", Payload: []byte("hang"), MessageID: "hang-1"}}
	for i := range 20 {
		recs = append(recs, rec("t", fmt.Sprint("k", i%4), i))
	}
	writeTx(t, b, true, recs...)

	failed := r.waitEvent(t, 10*time.Second, func(e engine.Event) bool {
		return e.Kind == engine.EventFailed && e.MessageID == "hang-1"
	})
	require.ErrorIs(t, failed.Err, context.DeadlineExceeded)
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == len(recs) }))

	mu.Lock()
	defer mu.Unlock()
	require.ErrorIs(t, hangErr, context.DeadlineExceeded)
	require.Less(t, hangFor, 5*time.Second, "the hanging attempt ended at its PublishTimeout")
	require.Empty(t, deadAtPublish, "attempts after the timed-out one got live contexts")
}
