package engine

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/actors"
)

// A tail poll that carries the delivered batches idle actors left to it
// deletes each one's records under its own lease in the same statement
// that fetches the partition's next records (never those it deletes), and
// hands every such actor its result, even with no new records; for a
// partition whose lease was taken over meanwhile it deletes nothing, hands
// over no records and says the lease is lost.
func TestTailPollCompletesTheBatchesLeftToIt(t *testing.T) {
	t.Parallel()
	pool, schema, cfg, st := newTestStore(t, 4)
	ctx := context.Background()
	keyA, keyB := twoPartitionKeys(4)
	pa, pb := Partition(keyA, 4), Partition(keyB, 4)
	got, err := st.acquire(ctx, "me", time.Minute, []int32{int32(pa), int32(pb)})
	require.NoError(t, err)

	hand := make(handoffs, 4)
	ha, hb := newHandoff(), newHandoff()
	hand[pa].Store(ha)
	hand[pb].Store(hb)
	tl := newTail(tailDeps{interval: cfg.TailInterval, limit: 100, store: st, handoffs: hand, waker: actors.NewWaker(), instance: "me"})
	_, err = tl.poll(ctx) // no actor waits: the poll only learns where the table ends
	require.NoError(t, err)

	writeKeys(t, pool, cfg, keyA, keyA, keyB)
	ha.idle()
	hb.idle()
	_, err = tl.poll(ctx)
	require.NoError(t, err)
	ba, bb := <-ha.ch, <-hb.ch
	require.Len(t, ba.batch, 2)
	require.Len(t, bb.batch, 1)
	require.Nil(t, ba.done, "nothing was left to this poll")

	// Both actors published everything and leave the completion to the
	// next poll; partition b is taken over before it runs, and a has a new
	// record meanwhile.
	da := &tailDone{epoch: got[pa], ids: []int64{ba.batch[0].id, ba.batch[1].id}}
	db := &tailDone{epoch: got[pb], ids: []int64{bb.batch[0].id}}
	ha.done.Store(da)
	ha.idle()
	hb.done.Store(db)
	hb.idle()
	_, err = pool.Exec(ctx, "UPDATE "+pgx.Identifier{schema, "partitions"}.Sanitize()+
		" SET owner = 'other', epoch = epoch + 1 WHERE partition = $1", pb)
	require.NoError(t, err)
	writeKeys(t, pool, cfg, keyA)

	_, err = tl.poll(ctx)
	require.NoError(t, err)
	ra, rb := <-ha.ch, <-hb.ch
	require.Same(t, da, ra.done)
	require.False(t, ra.lost)
	require.Len(t, ra.batch, 1, "the new record only, not the two the statement deleted")
	require.Greater(t, ra.batch[0].id, ba.batch[1].id)
	require.Same(t, db, rb.done, "handed back without new records")
	require.True(t, rb.lost)
	require.Empty(t, rb.batch)

	require.ElementsMatch(t, []int64{ra.batch[0].id, bb.batch[0].id}, pendingIDs(t, pool, cfg),
		"a's delivered records are gone, b's stays for its new owner")
}

// An actor leaves a handed batch it delivered whole to the next tail poll
// and emits the batch's outcomes only once a completion committed: the
// poll's, when the poll hands its result back (a lease renewal meanwhile
// does not end its wait; a wake-up whose own completion fails leaves the
// batch to the tail again), or its own, when it takes its partition back
// first — here a graceful stop, which must still complete what was
// published.
func TestActorSettlesTheBatchItLeftToTheTailPoll(t *testing.T) {
	t.Parallel()
	for _, byTail := range []bool{true, false} {
		t.Run(fmt.Sprintf("by the tail %v", byTail), func(t *testing.T) {
			t.Parallel()
			pool, _, cfg, st := newTestStore(t, 4)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			key, _ := twoPartitionKeys(4)
			p := Partition(key, 4)
			got, err := st.acquire(ctx, "me", time.Minute, []int32{int32(p)})
			require.NoError(t, err)

			var mu sync.Mutex
			var delivered []int64
			hand := make(handoffs, 4)
			cfg.InstanceID = "me"
			completeCtx := context.Background()
			if byTail {
				// The actor's own completions fail: the tail's must do.
				cctx, cancel := context.WithCancel(completeCtx)
				cancel()
				completeCtx = cctx
			}
			deps := &partitionDeps{
				cfg:       partitionConfigFrom(cfg),
				batch:     newBatcher(st, "me", 10*time.Second, context.Background(), completeCtx),
				leases:    st,
				publish:   func(string, *message.Message) error { return nil },
				fastSlots: make(chan struct{}, 1),
				handoffs:  hand,
				emit: func(e Event) {
					if e.Kind == EventDelivered {
						mu.Lock()
						delivered = append(delivered, e.RecordID)
						mu.Unlock()
					}
				},
			}
			deps.cfg.pollInterval = time.Hour // nothing but the test wakes it
			mailbox, waker := actors.NewMailbox[leaseMsg](1), actors.NewWaker()
			a := newPartitionActor(deps, p, got[p], mailbox, waker)
			served := make(chan error, 1)
			go func() { served <- a.Serve(ctx) }()

			// Wait until it waits, then hand it a batch as the tail does.
			h := waitFor(t, func() (*handoff, bool) {
				h := hand[p].Load()
				if h == nil {
					return nil, false
				}
				_, ok := h.waiting()
				return h, ok
			})
			writeKeys(t, pool, cfg, key, key)
			res, err := st.fetchOne(ctx, p, 100)
			require.NoError(t, err)
			require.Len(t, res.batch, 2)
			word, _ := h.waiting()
			require.True(t, h.claim(word, res))

			// It publishes both, leaves the completion to the poll, waits.
			d := waitFor(t, func() (*tailDone, bool) {
				d := h.done.Load()
				_, waiting := h.waiting()
				return d, d != nil && waiting
			})
			require.Equal(t, []int64{res.batch[0].id, res.batch[1].id}, d.ids)
			mu.Lock()
			require.Empty(t, delivered, "nothing is emitted before a completion committed")
			mu.Unlock()
			require.Len(t, pendingIDs(t, pool, cfg), 2)

			if byTail {
				// A lease renewal (every heartbeat) leaves the actor waiting
				// for the tail: it does not take its partition back and
				// complete the batch itself (which fails here).
				require.True(t, mailbox.TrySend(leaseMsg{deadline: time.Now().Add(time.Minute)}))
				waitFor(t, func() (struct{}, bool) { return struct{}{}, mailbox.Len() == 0 })
				// A wake-up does take it back; its own completion fails,
				// and the batch stays left to the tail (it is not dropped
				// with a restart, to be published again): the actor waits
				// again, in a new generation, with the same batch.
				word, _ := h.waiting()
				waker.Wake()
				waitFor(t, func() (struct{}, bool) {
					w, waiting := h.waiting()
					return struct{}{}, waiting && w != word && h.done.Load() == d
				})
				tl := newTail(tailDeps{interval: cfg.TailInterval, limit: 100, store: st, handoffs: hand, waker: actors.NewWaker(), instance: "me"})
				_, err = tl.poll(ctx)
				require.NoError(t, err)
				waitFor(t, func() (struct{}, bool) {
					mu.Lock()
					defer mu.Unlock()
					return struct{}{}, len(delivered) == 2
				})
				cancel()
			} else {
				cancel() // a graceful stop with the batch left to a poll that never comes
			}
			require.NoError(t, <-served)
			require.Empty(t, pendingIDs(t, pool, cfg), "the published records were completed")
			require.Equal(t, []int64{res.batch[0].id, res.batch[1].id}, delivered)
			require.Nil(t, h.done.Load())
		})
	}
}

// twoPartitionKeys returns two keys of different partitions of n.
func twoPartitionKeys(n int) (string, string) {
	a, b := "a", "b"
	for i := 0; Partition(b, n) == Partition(a, n); i++ {
		b = fmt.Sprint("b", i)
	}
	return a, b
}

func writeKeys(t testing.TB, pool *pgxpool.Pool, cfg Config, keys ...string) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	var recs []Record
	for _, k := range keys {
		recs = append(recs, Record{Topic: "t", Key: k, Payload: []byte("x")})
	}
	require.NoError(t, NewWriter(cfg).Write(ctx, tx, recs...))
	require.NoError(t, tx.Commit(ctx))
}

func pendingIDs(t *testing.T, pool *pgxpool.Pool, cfg Config) []int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT id FROM "+cfg.ident("records")+" ORDER BY id")
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return ids
}

// waitFor polls cond until it holds (10 s at most) and returns its value.
func waitFor[T any](t *testing.T, cond func() (T, bool)) T {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, ok := cond(); ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}
