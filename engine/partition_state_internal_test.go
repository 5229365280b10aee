package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/actors"
)

// A partition actor's state changes only by the events apply takes, and
// events of another epoch change nothing.
func TestPartitionStateAppliesEvents(t *testing.T) {
	t.Parallel()
	now := time.Now()
	s := newPartitionState(7)
	require.False(t, s.leaseValid(now), "not held before the lease is read")

	s.apply(Event{Kind: EventLeaseAcquired, Epoch: 6, leaseUntil: now.Add(time.Hour)})
	require.False(t, s.held, "another epoch's lease")
	s.apply(Event{Kind: EventLeaseAcquired, Epoch: 7, leaseUntil: now.Add(time.Second)})
	require.True(t, s.leaseValid(now))

	s.apply(Event{Kind: eventLeaseRenewed, Epoch: 7, leaseUntil: now.Add(time.Minute)})
	require.Equal(t, now.Add(time.Minute), s.deadline)
	s.apply(Event{Kind: eventLeaseRenewed, Epoch: 7, leaseUntil: now.Add(time.Second)})
	require.Equal(t, now.Add(time.Minute), s.deadline, "a late, older renewal does not shorten the lease")

	s.apply(Event{Kind: EventBatchFetched, Count: 3})
	s.apply(Event{Kind: EventFailed, Delay: 300 * time.Millisecond, Duration: time.Millisecond})
	s.apply(Event{Kind: EventFailed, Delay: 100 * time.Millisecond, Duration: 2 * time.Millisecond})
	s.apply(Event{Kind: EventDelivered, Duration: 3 * time.Millisecond})
	require.Equal(t, 100*time.Millisecond, s.nextRetry, "the shortest backoff of the batch")
	s.apply(Event{Kind: eventBatchCompleted})
	require.Equal(t, publishEstimate(parallelPublishThreshold, time.Millisecond), s.publishEstimate)
	s.apply(Event{Kind: EventBatchFetched, Count: 1})
	require.Zero(t, s.nextRetry, "a new batch starts with no retry scheduled")

	s.apply(Event{Kind: EventLeaseLost, Epoch: 6})
	require.True(t, s.held, "another epoch's loss")
	s.apply(Event{Kind: EventLeaseLost, Epoch: 7})
	require.False(t, s.leaseValid(now))
	s.apply(Event{Kind: eventLeaseRenewed, Epoch: 7, leaseUntil: now.Add(time.Hour)})
	require.False(t, s.held, "a renewal does not revive a lost lease")
}

// Every start of a partition actor rebuilds its lease state from the
// partitions row: a new actor of a held lease may publish until about the
// database's lease_until, and one whose lease was taken over meanwhile ends
// for good with ErrLeaseLost before it publishes anything.
func TestPartitionActorRebuildsItsLeaseFromTheDatabase(t *testing.T) {
	t.Parallel()
	pool, schema, cfg, st := newTestStore(t, 4)
	ctx := context.Background()
	cfg.InstanceID = "me"
	const p = 2
	got, err := st.acquire(ctx, "me", time.Minute, []int32{p})
	require.NoError(t, err)
	epoch := got[p]

	publishes := 0
	deps := &partitionDeps{
		cfg:    partitionConfigFrom(cfg),
		batch:  newBatcher(st, "me", time.Second, ctx, ctx),
		leases: st,
		publish: func(string, *message.Message) error {
			publishes++
			return nil
		},
		emit:      func(Event) {},
		fastSlots: make(chan struct{}, 1),
		handoffs:  make(handoffs, 4),
	}
	newActor := func() *partitionActor {
		return newPartitionActor(deps, p, epoch, actors.NewMailbox[leaseMsg](1), actors.NewWaker())
	}

	a := newActor()
	before := time.Now()
	require.NoError(t, a.loadLease(ctx))
	require.True(t, a.st.held)
	require.Equal(t, epoch, a.st.epoch)
	require.WithinRange(t, a.st.deadline, before.Add(time.Minute-5*time.Second), time.Now().Add(time.Minute))

	// Another instance takes the partition over; the next start (a restart
	// after a failure, say) finds out from the row.
	_, err = pool.Exec(ctx, "UPDATE "+pgx.Identifier{schema, "partitions"}.Sanitize()+
		" SET owner = 'other', epoch = epoch + 1 WHERE partition = $1", p)
	require.NoError(t, err)
	b := newActor()
	require.NotSame(t, a, b)
	err = b.Serve(ctx)
	require.ErrorIs(t, err, ErrLeaseLost)
	require.True(t, errors.Is(err, actors.ErrDoNotRestart), "a lost lease is not restarted")
	require.False(t, b.st.held)
	require.Zero(t, publishes)
}

// A handed batch that has to wait for a fast-broker slot leaves its cohort
// first: the slots' holders may be the rest of that cohort, whose
// completion would otherwise wait for it (the linger) on every poll.
func TestHandedBatchWaitingForASlotLeavesItsCohort(t *testing.T) {
	t.Parallel()
	deps := &partitionDeps{
		cfg:       partitionConfig{batchSize: 10, tailLimit: 10},
		fastSlots: make(chan struct{}, 1),
		handoffs:  make(handoffs, 1),
	}
	deps.fastSlots <- struct{}{} // every slot taken
	a := newPartitionActor(deps, 0, 1, actors.NewMailbox[leaseMsg](1), actors.NewWaker())
	a.st.publishEstimate = 0 // an in-memory broker: the fast path, with slots
	coh := newCohort(2)      // this batch and one that holds the slot
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = a.runBatch(ctx, &fetchResult{batch: []fetched{{id: 1, key: "k"}}, cohort: coh})
	}()
	coh.arrive() // the member holding the slot arrives at its completion
	select {
	case <-coh.full: // the waiting member counted itself in without the slot
	case <-time.After(10 * time.Second):
		t.Fatal("a batch waiting for a slot still held its cohort's completion")
	}
	select {
	case <-done:
		t.Fatal("runBatch went on without a slot")
	default:
	}
	cancel()
	<-done
}

// A partition actor's lease read runs in a context its stop does not
// cancel, bounded by StopTimeout instead, and the read still answers after
// the actor's context is gone (see uninterrupted).
func TestLeaseReadIsNotInterruptedByAStop(t *testing.T) {
	t.Parallel()
	_, _, cfg, st := newTestStore(t, 4)
	cfg.InstanceID = "me"
	const p = 1
	got, err := st.acquire(context.Background(), "me", time.Minute, []int32{p})
	require.NoError(t, err)

	stopped, stop := context.WithCancel(context.Background())
	stop()
	rctx, cancel := uninterrupted(stopped, 5*time.Second)
	defer cancel()
	require.NoError(t, rctx.Err(), "the actor's stop cancels its lease read")
	deadline, ok := rctx.Deadline()
	require.True(t, ok, "the lease read must stay bounded")
	require.WithinDuration(t, time.Now().Add(5*time.Second), deadline, time.Second)

	// An actor stopped before its lease read still reads its lease.
	deps := &partitionDeps{cfg: partitionConfigFrom(cfg), leases: st, emit: func(Event) {}}
	a := newPartitionActor(deps, p, got[p], actors.NewMailbox[leaseMsg](1), actors.NewWaker())
	require.NoError(t, a.loadLease(stopped))
	require.True(t, a.st.held)
}
