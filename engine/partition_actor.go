package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/postrelay/postrelay/actors"
)

// A partition actor relays one partition this instance holds a lease on.
// The coordinator starts one per lease it acquires, bound to the lease's
// epoch, and tells it of renewals and losses (leaseMsg); everything else it
// uses comes in partitionDeps. Its loop:
//
//	read the lease from the partitions row (loadLease), then until it is lost:
//	  take the batch the tail poll handed over (handoff), or fetch one
//	    (batcher → store.sqlFetch): the tail fetches for waiting actors at
//	    steady load, an actor fetches on its own at start, in a backlog (its
//	    last batch was full) and when its timer fires
//	  publish it: in id order, or keys in parallel for a slow broker; a failed
//	    record holds back the later records of its key
//	  complete it in one statement fenced by the lease (store.sqlComplete),
//	    or, for a handed batch delivered whole, leave that to the next tail
//	    poll's statement (tailDone), which completes it before it fetches
//	  apply and emit the outcomes once that committed
//	  sleep until handed a batch (handoff), woken (waker), told about the
//	    lease (mailbox), the next held record or retry is due, or
//	    PollInterval passed
//
// Its state is partitionState, changed only by apply.

// partitionConfig is the part of Config a partition actor reads.
type partitionConfig struct {
	instance           string
	batchSize          int
	tailLimit          int // the most records the tail poll hands over at once
	pollInterval       time.Duration
	publishConcurrency int
	publishTimeout     time.Duration
	stopTimeout        time.Duration
	maxAttempts        int
	retention          bool // completions carry the delivered records' history batch
	retryDelay         func(attempt int) time.Duration
	logger             *slog.Logger
	observer           Observer
}

func partitionConfigFrom(c Config) partitionConfig {
	return partitionConfig{
		instance:           c.InstanceID,
		batchSize:          c.BatchSize,
		tailLimit:          min(c.BatchSize, tailBatchLimit),
		pollInterval:       c.PollInterval,
		publishConcurrency: c.PublishConcurrency,
		publishTimeout:     c.PublishTimeout,
		stopTimeout:        c.StopTimeout,
		maxAttempts:        c.MaxAttempts,
		retention:          c.Retention > 0,
		retryDelay:         c.retryDelay,
		logger:             c.Logger,
		observer:           c.Observer,
	}
}

// partitionDeps is what every partition actor uses, built once by
// Engine.Run and shared by all of them.
type partitionDeps struct {
	cfg partitionConfig
	// batch fetches and completes batches through shared statements.
	batch *batcher
	// leases reads a partition's lease when an actor starts.
	leases *store
	// publish publishes one message (safePublisher.publish).
	publish func(topic string, msg *message.Message) error
	// emit hands an event to Engine.Events and the Observer.
	emit func(Event)
	// fastSlots bounds the batches in flight for a fast broker.
	fastSlots chan struct{}
	// inFlight bounds the Publish calls in flight (Config.MaxInFlight); nil
	// means no bound.
	inFlight chan struct{}
	// handoffs is where each actor registers the handoff through which the
	// tail poll gives it batches while it waits (handoff.go).
	handoffs handoffs
}

// safePublisher calls a publisher, turning a panic into an error.
type safePublisher struct{ p message.Publisher }

func (s safePublisher) publish(topic string, msg *message.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("postrelay: publisher panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return s.p.Publish(topic, msg)
}

// leaseMsg is what the coordinator tells a partition actor about its lease:
// renewed until deadline (the local time the renewal was sent plus the TTL;
// the database set lease_until from a later now()), or lost (the renewal
// found it taken or reset). Both are facts the database already holds.
type leaseMsg struct {
	deadline time.Time
	lost     bool
}

// Kinds of the events a partition actor applies to its state but does not
// emit: they say nothing a subscriber or a metric needs.
const (
	// eventLeaseRenewed: the coordinator renewed the lease until
	// Event.leaseUntil.
	eventLeaseRenewed EventKind = 128 + iota
	// eventBatchCompleted: a batch's completion committed and its outcomes
	// were applied.
	eventBatchCompleted
)

// partitionState is what a partition actor knows. It changes only in apply,
// by events whose fact is already in PostgreSQL (a lease read or renewed, a
// lease found lost by a renewal or a fenced statement, a batch's outcomes
// once its completion committed), and it is rebuilt on every start: a
// (re)started actor is a new value that reads its lease from the
// partitions row before anything else.
type partitionState struct {
	// epoch is the lease epoch the actor is bound to.
	epoch int64
	// held says the lease is ours; false once it is known lost.
	held bool
	// deadline is the local time until which the lease is surely valid.
	deadline time.Time
	// nextRetry is the shortest retry backoff the last batch scheduled.
	nextRetry time.Duration
	// batchFastest is the fastest Publish call among the outcomes applied
	// since the batch was fetched.
	batchFastest time.Duration
	// publishEstimate is a moving average of each batch's fastest Publish
	// call: the broker's own round trip (see publishEstimate).
	publishEstimate time.Duration
}

// newPartitionState is the state before the lease is read: not held, and a
// network broker assumed until publishes are measured.
func newPartitionState(epoch int64) partitionState {
	return partitionState{epoch: epoch, publishEstimate: parallelPublishThreshold}
}

// apply changes the state by one event. Events of another epoch do not
// apply.
func (s *partitionState) apply(e Event) {
	switch e.Kind {
	case EventLeaseAcquired: // read from the partitions row at start
		if e.Epoch == s.epoch {
			s.held, s.deadline = true, e.leaseUntil
		}
	case eventLeaseRenewed:
		if s.held && e.Epoch == s.epoch && e.leaseUntil.After(s.deadline) {
			s.deadline = e.leaseUntil
		}
	case EventLeaseLost:
		if e.Epoch == s.epoch {
			s.held = false
		}
	case EventBatchFetched:
		s.nextRetry, s.batchFastest = 0, 0
	case EventDelivered, EventFailed, EventDeadLettered:
		if e.Duration > 0 && (s.batchFastest == 0 || e.Duration < s.batchFastest) {
			s.batchFastest = e.Duration
		}
		if e.Kind == EventFailed {
			if d := max(e.Delay, time.Millisecond); s.nextRetry == 0 || d < s.nextRetry {
				s.nextRetry = d
			}
		}
	case eventBatchCompleted:
		s.publishEstimate = publishEstimate(s.publishEstimate, s.batchFastest)
	}
}

// leaseValid says whether the actor may publish now.
func (s *partitionState) leaseValid(now time.Time) bool {
	return s.held && now.Before(s.deadline)
}

// parallelPublishThreshold is the publish estimate from which a partition
// publishes several keys at once.
const parallelPublishThreshold = 200 * time.Microsecond

// publishEstimate folds a batch's fastest Publish call (0: none measured)
// into the moving estimate prev of the broker's round trip. The fastest
// call, not the mean, is what tells a network broker from an in-process
// one: while many partitions publish at once on few cores, every call's
// duration also holds the time its goroutine waited to be scheduled, and
// a mean inflated that way once kept a broker answering in microseconds on
// the parallel path, whose goroutines made the wait longer still.
func publishEstimate(prev, fastest time.Duration) time.Duration {
	if fastest <= 0 {
		return prev
	}
	return (prev*3 + fastest) / 4
}

// partitionActor relays one owned partition: fetch in id order, publish,
// complete in one fenced statement. It is bound to one lease epoch; the
// coordinator starts a new one for every lease it acquires, and the
// supervisor builds a new one for every restart.
type partitionActor struct {
	d       *partitionDeps
	p       int
	mailbox *actors.Mailbox[leaseMsg] // from the coordinator
	waker   *actors.Waker             // there may be new records
	st      partitionState

	done completion
	// pending holds the events of the batch in flight; they are applied and
	// emitted once the batch's completion is committed.
	pending []Event
	// deferred is the delivered batch (done, pending) left to the next tail
	// poll to complete while the actor waits (see tailDone); nil otherwise.
	deferred *tailDone
}

func newPartitionActor(d *partitionDeps, p int, epoch int64, mailbox *actors.Mailbox[leaseMsg], waker *actors.Waker) *partitionActor {
	return &partitionActor{d: d, p: p, mailbox: mailbox, waker: waker, st: newPartitionState(epoch)}
}

// apply applies an event to the actor's state.
func (a *partitionActor) apply(e Event) { a.st.apply(e) }

// lostErr is what Serve returns once the lease is lost: the actor ends for
// good, and the coordinator learns it from the exit.
func lostErr(cause error) error {
	if cause == nil {
		cause = ErrLeaseLost
	}
	return fmt.Errorf("%w: %w", actors.ErrDoNotRestart, cause)
}

// Serve reads the lease, then relays until the lease is lost or ctx ends.
// A database error returns it to the supervisor, which starts a new actor
// after a backoff; that one reads the lease again.
func (a *partitionActor) Serve(ctx context.Context) error {
	if err := a.loadLease(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	log := a.d.cfg.logger.With("partition", a.p, "epoch", a.st.epoch)
	h := newHandoff()
	slot := &a.d.handoffs[a.p]
	slot.Store(h)
	defer slot.CompareAndSwap(h, nil) // a batch handed over after this is dropped
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var handed *fetchResult // the batch the tail poll handed over, if any
	for {
		a.drainMailbox()
		if !a.st.held {
			return lostErr(nil)
		}
		if ctx.Err() != nil {
			if a.deferred != nil { // a graceful stop: one more try
				_ = a.settleDeferred(ctx, h, nil)
			}
			return nil
		}
		var wait time.Duration
		leaseWait := !a.st.leaseValid(time.Now())
		if a.deferred != nil {
			// The batch left to the tail could not be completed yet (the
			// database did not answer): nothing else until it is, by the
			// tail's next poll or the actor's next try. Restarting the
			// actor instead would drop it, and publish its records again.
			wait = a.d.cfg.pollInterval
			if handed != nil {
				handed.cohort.arrive()
			}
		} else if leaseWait {
			// The lease may have expired locally while the coordinator
			// could not renew it: publish nothing until it is renewed (a
			// handed batch is dropped: its records are fetched again).
			wait = a.d.cfg.pollInterval
			if handed != nil {
				handed.cohort.arrive()
			}
		} else {
			res, err := a.runBatch(ctx, handed)
			if err != nil {
				if end, ret := a.ends(ctx, log, err); end {
					return ret
				}
				log.Warn("postrelay: partition batch failed", "error", err)
				return err
			}
			if res.full {
				handed = nil
				continue // a full batch: more is waiting
			}
			wait = a.d.cfg.pollInterval
			if d := res.nextHeld; res.hasHeld && d < wait {
				// Be back when the next held record (delay or backoff)
				// becomes available, if that is sooner than the poll.
				wait = max(d, time.Millisecond)
			}
			if d := a.st.nextRetry; d > 0 && d < wait {
				wait = d // this batch scheduled a retry: be back for it
			}
		}
		handed = nil
		timer.Reset(wait)
		h.done.Store(a.deferred)
		h.idle() // from here the tail poll may fetch for this partition
		stopping := false
	wait:
		for {
			select {
			case <-ctx.Done():
				stopping = true
			case b := <-h.ch:
				handed = &b
			case <-a.waker.C():
			case <-a.mailbox.Ready():
				// A renewal of a valid lease changes nothing the wait is
				// for: take it in and keep waiting, the partition still
				// the tail's to fetch (taking it back on every heartbeat
				// made every idle actor fetch on its own once a second, and
				// complete itself what it had left to the tail). A loss,
				// or a renewal the actor waits for, ends the wait.
				a.drainMailbox()
				if a.st.held && !leaseWait {
					continue wait
				}
			case <-timer.C:
			}
			break
		}
		if handed == nil && !h.reclaim() {
			// The tail claimed this partition first: its batch is on the
			// way (sent right after the claim).
			b := <-h.ch
			handed = &b
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if a.deferred != nil {
			h.done.Store(nil)
			if err := a.settleDeferred(ctx, h, handed); err != nil {
				if end, ret := a.ends(ctx, log, err); end {
					return ret
				}
				log.Warn("postrelay: partition batch completion failed, will retry", "error", err)
			}
		}
		if stopping {
			return nil // a graceful stop: what was published is completed
		}
	}
}

// ends says whether a batch's error ends the actor, and with what Serve
// returns: for good on a lost lease, quietly when stopping (the
// coordinator stops this actor next).
func (a *partitionActor) ends(ctx context.Context, log *slog.Logger, err error) (bool, error) {
	if errors.Is(err, ErrLeaseLost) {
		log.Warn("postrelay: partition lease lost, stopping without committing", "error", err)
		a.apply(a.leaseEvent(EventLeaseLost))
		return true, lostErr(err)
	}
	if ctx.Err() != nil || errors.Is(err, ErrShutdown) {
		return true, nil
	}
	return false, nil
}

// settleDeferred ends the wait of a batch left to the tail poll: if the
// poll's result handed over carries it, the poll's statement completed it
// (or found the lease gone); otherwise the actor took its partition back
// first and completes the batch itself, through the batcher, before it
// fetches anything, once a poll whose statement carries the batch has
// ended (its delete then finds nothing). Once completed, the outcomes are
// applied and emitted. If its own completion fails for another reason
// than the lease, the batch stays deferred (see Serve).
func (a *partitionActor) settleDeferred(ctx context.Context, h *handoff, handed *fetchResult) error {
	d := a.deferred
	if handed != nil && handed.done == d {
		a.deferred = nil
		defer a.clearPending()
		if handed.lost {
			return fmt.Errorf("%w: partition %d epoch %d", ErrLeaseLost, a.p, d.epoch)
		}
	} else {
		// A poll whose statement carries the batch ends first (taking
		// the lock is the wait; nothing needs holding it).
		h.carrying.Lock()
		h.carrying.Unlock()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.d.cfg.stopTimeout)
		defer cancel()
		err := a.d.batch.completeBatch(cctx, a.p, d.epoch, &a.done, nil)
		if err != nil && !errors.Is(err, ErrLeaseLost) {
			return fmt.Errorf("postrelay: partition %d: complete batch: %w", a.p, err) // still deferred
		}
		a.deferred = nil
		defer a.clearPending()
		if err != nil {
			return err
		}
	}
	a.committed()
	return nil
}

// committed applies and emits the outcomes of the batch whose completion
// committed: they are facts now.
func (a *partitionActor) committed() {
	for _, e := range a.pending {
		a.apply(e)
		a.d.emit(e)
	}
	a.apply(a.leaseEvent(eventBatchCompleted))
}

// clearPending drops the batch's events, so that an idle partition holds
// no records in memory.
func (a *partitionActor) clearPending() {
	clear(a.pending[:cap(a.pending)])
	a.pending = a.pending[:0]
}

// loadLease rebuilds the lease state from the partitions row: held with
// the actor's epoch, until the local time the read was sent plus what the
// database says is left (its now() is later: a safe deadline); or lost if
// the row names another owner or epoch.
func (a *partitionActor) loadLease(ctx context.Context) error {
	sent := time.Now()
	rctx, cancel := uninterrupted(ctx, a.d.cfg.stopTimeout)
	defer cancel()
	l, err := a.d.leases.readLease(rctx, a.p)
	if err != nil {
		return fmt.Errorf("postrelay: partition %d: read lease: %w", a.p, err)
	}
	e := a.leaseEvent(EventLeaseAcquired)
	if l.owner != a.d.cfg.instance || l.epoch != a.st.epoch {
		e.Kind = EventLeaseLost
	}
	e.leaseUntil = sent.Add(l.remaining)
	a.apply(e)
	return nil
}

// uninterrupted returns the context of a short statement that a stop
// (ctx's cancellation) must not cut short, bounded by timeout instead: pgx
// closes a connection whose statement a context interrupts and sends
// PostgreSQL a cancel request on its way out, and a process that exits or
// is killed while such a request is in flight can crash an older
// PgBouncer (pgbouncer/pgbouncer#801; Debian 12 ships 1.18; README.md
// advises 1.21 or later). A rebalance stops
// actors that have just started, in their lease read. The caller checks
// ctx after the statement.
func uninterrupted(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), timeout)
}

// drainMailbox applies what the coordinator said about the lease.
func (a *partitionActor) drainMailbox() {
	for m, ok := a.mailbox.TryReceive(); ok; m, ok = a.mailbox.TryReceive() {
		e := a.leaseEvent(eventLeaseRenewed)
		if m.lost {
			e.Kind = EventLeaseLost
		}
		e.leaseUntil = m.deadline
		a.apply(e)
	}
}

// leaseEvent returns an event of kind about this actor's lease.
func (a *partitionActor) leaseEvent(kind EventKind) Event {
	return Event{Kind: kind, Time: time.Now(), Instance: a.d.cfg.instance, Partition: a.p, Epoch: a.st.epoch}
}

// batchResult is what a batch tells the actor about when to look again.
type batchResult struct {
	full bool // the batch had as many records as asked for: more may wait
	// nextHeld is how long after the fetch the partition's next held record
	// (delayed or backing off) becomes available; hasHeld says there was
	// one.
	nextHeld time.Duration
	hasHeld  bool
}

// runBatch publishes and completes one batch, the one handed over by the
// tail poll or (handed nil) one it fetches, then applies and emits its
// outcomes.
func (a *partitionActor) runBatch(ctx context.Context, handed *fetchResult) (batchResult, error) {
	var res fetchResult
	if handed != nil {
		res = *handed
		// Count this batch into its cohort once, when it completes or
		// else on the way out.
		defer func() { res.cohort.arrive() }()
	}
	// With a fast broker the work is database- and CPU-bound: a few batches
	// in flight at a time keep the cores busy, more only contend (and hold
	// more records in memory). Partitions of a slow broker are not limited:
	// their batches wait on the network.
	if a.st.publishEstimate < parallelPublishThreshold {
		select {
		case a.d.fastSlots <- struct{}{}:
		default:
			// Every slot is taken, perhaps by batches of this one's cohort
			// whose completion waits for it: leave the cohort rather than
			// hold them up for the linger.
			res.cohort.arrive()
			res.cohort = nil
			select {
			case a.d.fastSlots <- struct{}{}:
			case <-ctx.Done():
				return batchResult{}, nil
			}
		}
		defer func() { <-a.d.fastSlots }()
	}
	limit := a.d.cfg.tailLimit
	if handed == nil {
		var err error
		limit = a.d.cfg.batchSize
		if res, err = a.d.batch.fetchBatch(ctx, a.p, limit); err != nil {
			return batchResult{}, fmt.Errorf("postrelay: partition %d: fetch: %w", a.p, err)
		}
	}
	out := batchResult{full: len(res.batch) >= limit, nextHeld: res.nextHeld, hasHeld: res.hasHeld}
	batch := res.batch
	if len(batch) == 0 {
		return out, nil
	}
	// Drop the batch's events once done (unless the batch is left to the
	// tail poll), so that an idle partition holds no records in memory.
	defer func() {
		if a.deferred == nil {
			a.clearPending()
		}
	}()
	fetchedAt := time.Now()
	fe := a.leaseEvent(EventBatchFetched)
	fe.Count = len(batch)
	a.apply(fe)
	a.d.emit(fe)

	a.done.reset()
	a.pending = a.pending[:0]
	// Publishing keys in parallel pays off only when a publish waits on the
	// network; for a broker that answers in microseconds the goroutines
	// cost more than they save.
	if a.d.cfg.publishConcurrency == 1 || a.st.publishEstimate < parallelPublishThreshold {
		a.publishSequential(ctx, batch, fetchedAt)
	} else if lanes := a.lanes(batch); len(lanes) <= 1 {
		a.publishSequential(ctx, batch, fetchedAt)
	} else {
		a.publishLanes(ctx, batch, lanes, fetchedAt)
	}
	if a.done.empty() {
		return out, nil
	}
	if handed != nil && !out.full && !a.d.cfg.retention && len(a.done.retryIDs) == 0 && len(a.done.deadIDs) == 0 {
		// Every record of a batch the tail handed over was delivered: the
		// next tail poll completes it (see tailDone).
		// In id order, as every statement deleting them takes their row
		// locks (see batcher.runComplete).
		slices.Sort(a.done.delivered)
		a.deferred = &tailDone{epoch: a.st.epoch, ids: slices.Clone(a.done.delivered)}
		return out, nil
	}
	if a.d.cfg.retention {
		a.done.encodeHistory(a.p, batch)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.d.cfg.stopTimeout)
	defer cancel()
	coh := res.cohort
	res.cohort = nil // the completion counts it in
	if err := a.d.batch.completeBatch(cctx, a.p, a.st.epoch, &a.done, coh); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			return out, err
		}
		return out, fmt.Errorf("postrelay: partition %d: complete batch: %w", a.p, err)
	}
	a.committed()
	return out, nil
}

// publishSequential publishes the batch in id order on this goroutine,
// skipping the later records of a key whose record failed.
func (a *partitionActor) publishSequential(ctx context.Context, batch []fetched, fetchedAt time.Time) {
	var blocked map[string]struct{} // keys with a failed record in this batch
	at := newAttemptTimeouts(ctx, a.d.cfg.publishTimeout)
	defer at.close()
	for i := range batch {
		r := &batch[i]
		if ctx.Err() != nil {
			return // stopping: complete what was published
		}
		a.drainMailbox()
		if !a.st.leaseValid(time.Now()) {
			return
		}
		if _, ok := blocked[r.key]; ok {
			continue // an earlier record of this key failed: keep order
		}
		out := a.deliver(ctx, at, r, fetchedAt)
		a.record(out)
		if out.ev.Kind != EventDelivered {
			if blocked == nil {
				blocked = make(map[string]struct{})
			}
			blocked[r.key] = struct{}{}
		}
	}
}

// lanes groups the batch's record indexes by key, in id order within a lane
// and lanes in the order of their first record.
func (a *partitionActor) lanes(batch []fetched) [][]int {
	if a.d.cfg.publishConcurrency == 1 {
		return nil
	}
	byKey := make(map[string]int, 16)
	var lanes [][]int
	for i := range batch {
		l, ok := byKey[batch[i].key]
		if !ok {
			l = len(lanes)
			byKey[batch[i].key] = l
			lanes = append(lanes, nil)
		}
		lanes[l] = append(lanes[l], i)
	}
	return lanes
}

// publishLanes publishes the batch with up to PublishConcurrency keys in
// flight: each key's records go out one after the other, in id order, and a
// failure ends that key's lane for this batch. The actor's goroutine keeps
// reading its mailbox meanwhile, so lease renewals and losses are seen.
func (a *partitionActor) publishLanes(ctx context.Context, batch []fetched, lanes [][]int, fetchedAt time.Time) {
	var deadline atomic.Int64
	deadline.Store(a.st.deadline.UnixNano())
	valid := func() bool { return time.Now().UnixNano() < deadline.Load() }

	work := make(chan []int, len(lanes))
	for _, l := range lanes {
		work <- l
	}
	close(work)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(a.d.cfg.publishConcurrency, len(lanes)) {
		wg.Go(func() {
			at := newAttemptTimeouts(ctx, a.d.cfg.publishTimeout)
			defer at.close()
			for lane := range work {
				for _, i := range lane {
					if ctx.Err() != nil || !valid() {
						break
					}
					out := a.deliver(ctx, at, &batch[i], fetchedAt)
					mu.Lock()
					a.record(out)
					mu.Unlock()
					if out.ev.Kind != EventDelivered {
						break // keep order: the key's later records wait
					}
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	for {
		select {
		case <-done:
			return
		case <-a.mailbox.Ready():
			a.drainMailbox()
			if !a.st.held {
				deadline.Store(0)
			} else {
				deadline.Store(a.st.deadline.UnixNano())
			}
		}
	}
}

// outcome is one attempt's result, before it is recorded in the batch.
type outcome struct {
	ev    Event
	err   string
	delay time.Duration
}

// record adds an attempt's outcome to the batch's completion and events.
func (a *partitionActor) record(o outcome) {
	switch o.ev.Kind {
	case EventDelivered:
		a.done.delivered = append(a.done.delivered, o.ev.RecordID)
	case EventFailed:
		a.done.retryIDs = append(a.done.retryIDs, o.ev.RecordID)
		a.done.retryErrs = append(a.done.retryErrs, o.err)
		a.done.retryUS = append(a.done.retryUS, o.delay.Microseconds())
	case EventDeadLettered:
		a.done.deadIDs = append(a.done.deadIDs, o.ev.RecordID)
		a.done.deadErrs = append(a.done.deadErrs, o.err)
	}
	a.pending = append(a.pending, o.ev)
}

// deliver publishes one record and returns the outcome; at gives the
// attempt its context (each publishing goroutine has its own). It is safe
// to call from several goroutines for records of different keys.
func (a *partitionActor) deliver(ctx context.Context, at *attemptTimeouts, r *fetched, fetchedAt time.Time) outcome {
	attempt := r.attempts + 1
	ev := Event{Kind: EventDelivered, Time: time.Now(), Instance: a.d.cfg.instance, Partition: a.p, Epoch: a.st.epoch,
		RecordID: r.id, Key: r.key, Topic: r.topic, MessageID: r.messageID, Attempt: attempt}

	if r.mdErr != nil { // cannot be published as it is: dead-letter now
		ev.Kind, ev.Err = EventDeadLettered, r.mdErr
		return outcome{ev: ev, err: r.mdErr.Error()}
	}

	md := r.metadata
	md[MetadataKey] = r.key
	md[MetadataRecordID] = strconv.FormatInt(r.id, 10)
	md[MetadataAttempt] = strconv.Itoa(attempt)
	md[MetadataPartition] = strconv.Itoa(a.p)
	msg := message.NewMessage(r.messageID, r.payload)
	msg.Metadata = md

	pctx := at.start()
	defer at.end()
	var finish AttemptFinisher
	if obs := a.d.cfg.observer; obs != nil {
		pctx, finish = obs.StartAttempt(pctx, Attempt{
			Instance: a.d.cfg.instance, Partition: a.p, RecordID: r.id, Key: r.key, Topic: r.topic,
			MessageID: r.messageID, Attempt: attempt, CreatedAt: r.createdAt, Metadata: md,
		}, msg)
	}
	msg.SetContext(pctx)

	if sem := a.d.inFlight; sem != nil {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			ev.Kind, ev.Err = EventFailed, context.Cause(ctx)
			if finish != nil {
				finish.FinishAttempt(AttemptResult{Outcome: OutcomeRetry, Err: ev.Err})
			}
			return outcome{ev: ev, err: ev.Err.Error(), delay: 0}
		}
	}
	start := time.Now()
	err := a.d.publish(r.topic, msg)
	ev.Duration = time.Since(start)
	if a.d.inFlight != nil {
		<-a.d.inFlight
	}
	ev.Lag = r.age + start.Sub(fetchedAt)

	if err == nil {
		if finish != nil {
			finish.FinishAttempt(AttemptResult{Outcome: OutcomeDelivered, Duration: ev.Duration})
		}
		return outcome{ev: ev}
	}
	ev.Err = err
	o := outcome{err: truncateError(err)}
	if attempt >= a.d.cfg.maxAttempts || errors.Is(err, ErrPermanent) {
		ev.Kind = EventDeadLettered
		if finish != nil {
			finish.FinishAttempt(AttemptResult{Outcome: OutcomeDeadLettered, Err: err, Duration: ev.Duration})
		}
	} else {
		ev.Kind = EventFailed
		ev.Delay = a.d.cfg.retryDelay(attempt)
		o.delay = ev.Delay
		if finish != nil {
			finish.FinishAttempt(AttemptResult{Outcome: OutcomeRetry, Err: err, Duration: ev.Duration})
		}
	}
	o.ev = ev
	return o
}

// truncateError keeps stored error texts bounded.
func truncateError(err error) string {
	s := err.Error()
	if len(s) > 2000 {
		s = s[:2000] + "…"
	}
	return s
}
