package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/postrelay/postrelay/actors"
)

// partitionConfig is the part of Config a partition actor reads.
type partitionConfig struct {
	instance           string
	batchSize          int
	pollInterval       time.Duration
	publishConcurrency int
	publishTimeout     time.Duration
	stopTimeout        time.Duration
	maxAttempts        int
	retryDelay         func(attempt int) time.Duration
	logger             *slog.Logger
	observer           Observer
}

func partitionConfigFrom(c Config) partitionConfig {
	return partitionConfig{
		instance:           c.InstanceID,
		batchSize:          c.BatchSize,
		pollInterval:       c.PollInterval,
		publishConcurrency: c.PublishConcurrency,
		publishTimeout:     c.PublishTimeout,
		stopTimeout:        c.StopTimeout,
		maxAttempts:        c.MaxAttempts,
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

// leaseMsg is a control message from the coordinator to a partition actor.
type leaseMsg struct {
	// deadline is the local time until which the lease is surely valid: the
	// time the renewal was sent plus the TTL (the database set lease_until
	// from a later now()).
	deadline time.Time
	lost     bool
}

// partitionState is what a partition actor knows. It changes only through
// apply, with events whose durable change is already in PostgreSQL, and it is
// rebuilt from the lease and the records table on every start.
type partitionState struct {
	epoch         int64
	leaseDeadline time.Time
	lost          bool
	delivered     int64
	failed        int64
	deadLettered  int64
}

func (s *partitionState) apply(e Event) {
	switch e.Kind {
	case EventLeaseAcquired:
		s.epoch = e.Epoch
	case EventLeaseLost:
		s.lost = true
	case EventDelivered:
		s.delivered++
	case EventFailed:
		s.failed++
	case EventDeadLettered:
		s.deadLettered++
	}
}

// partitionActor relays one owned partition: fetch in id order, publish,
// complete in one fenced statement.
type partitionActor struct {
	d       *partitionDeps
	p       int
	mailbox *actors.Mailbox[leaseMsg]
	waker   *actors.Waker
	st      partitionState

	done completion
	// pending holds the events of the batch in flight; they are applied and
	// emitted once the batch's completion is committed.
	pending []Event
	// publishEWMA is a moving average of the fastest Publish call of each
	// batch: the broker's own round trip (see publishEstimate).
	publishEWMA time.Duration
	// nextRetry is the shortest retry backoff the last batch scheduled.
	nextRetry time.Duration
	// nextHeld is how long after the last fetch the partition's next held
	// record (delayed or backing off) becomes available; hasHeld says
	// there was one.
	nextHeld time.Duration
	hasHeld  bool
}

// parallelPublishThreshold is the average publish duration from which a
// partition publishes several keys at once.
const parallelPublishThreshold = 200 * time.Microsecond

// observePublishTimes folds the batch's fastest publish into publishEWMA.
func (a *partitionActor) observePublishTimes() {
	var fastest time.Duration
	for _, e := range a.pending {
		if e.Duration > 0 && (fastest == 0 || e.Duration < fastest) {
			fastest = e.Duration
		}
	}
	a.publishEWMA = publishEstimate(a.publishEWMA, fastest)
}

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

func newPartitionActor(d *partitionDeps, p int, epoch int64, deadline time.Time, mailbox *actors.Mailbox[leaseMsg], waker *actors.Waker) *partitionActor {
	a := &partitionActor{
		d:       d,
		p:       p,
		mailbox: mailbox,
		waker:   waker,
	}
	a.st.epoch = epoch
	a.st.leaseDeadline = deadline
	a.publishEWMA = parallelPublishThreshold // until measured, assume a network broker
	return a
}

// Serve runs until the lease is lost or ctx ends. A database error returns
// it to the supervisor, which restarts it with backoff; the restarted actor
// rebuilds its state from the database.
func (a *partitionActor) Serve(ctx context.Context) error {
	log := a.d.cfg.logger.With("partition", a.p, "epoch", a.st.epoch)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		a.drainMailbox()
		if a.st.lost {
			return fmt.Errorf("%w: %w", actors.ErrDoNotRestart, ErrLeaseLost)
		}
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		if !a.leaseValid() {
			// The lease may have expired locally while the coordinator
			// could not renew it: publish nothing until it is renewed.
			wait = a.d.cfg.pollInterval
		} else {
			n, err := a.runBatch(ctx)
			if err != nil {
				if errors.Is(err, ErrLeaseLost) {
					a.lose(err)
					return fmt.Errorf("%w: %w", actors.ErrDoNotRestart, err)
				}
				if ctx.Err() != nil || errors.Is(err, ErrShutdown) {
					return nil // stopping: the coordinator stops this actor next
				}
				log.Warn("postrelay: partition batch failed", "error", err)
				return err
			}
			if n == a.d.cfg.batchSize {
				continue // a full batch: more is waiting
			}
			wait = a.d.cfg.pollInterval
			if d, ok := a.nextHeld, a.hasHeld; ok && d < wait {
				// Be back when the next held record (delay or backoff)
				// becomes available, if that is sooner than the poll.
				wait = max(d, time.Millisecond)
			}
			if d := a.nextRetry; d > 0 && d < wait {
				wait = d // this batch scheduled a retry: be back for it
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-a.waker.C():
		case <-a.mailbox.Ready():
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func (a *partitionActor) drainMailbox() {
	for {
		m, ok := a.mailbox.TryReceive()
		if !ok {
			return
		}
		if m.lost {
			a.st.lost = true
			continue
		}
		if m.deadline.After(a.st.leaseDeadline) {
			a.st.leaseDeadline = m.deadline
		}
	}
}

func (a *partitionActor) leaseValid() bool {
	return !a.st.lost && time.Now().Before(a.st.leaseDeadline)
}

func (a *partitionActor) lose(err error) {
	a.d.cfg.logger.Warn("postrelay: partition lease lost, stopping without committing", "partition", a.p, "epoch", a.st.epoch, "error", err)
	e := a.event(EventLeaseLost)
	e.Err = err
	a.st.apply(e) // the coordinator emits the event when the actor exits
}

func (a *partitionActor) event(kind EventKind) Event {
	return Event{Kind: kind, Time: time.Now(), Instance: a.d.cfg.instance, Partition: a.p, Epoch: a.st.epoch}
}

// runBatch fetches, publishes and completes one batch and returns how many
// records it fetched.
func (a *partitionActor) runBatch(ctx context.Context) (int, error) {
	// With a fast broker the work is database- and CPU-bound: a few batches
	// in flight at a time keep the cores busy, more only contend (and hold
	// more records in memory). Partitions of a slow broker are not limited:
	// their batches wait on the network.
	if a.publishEWMA < parallelPublishThreshold {
		select {
		case a.d.fastSlots <- struct{}{}:
			defer func() { <-a.d.fastSlots }()
		case <-ctx.Done():
			return 0, nil
		}
	}
	res, err := a.d.batch.fetchBatch(ctx, a.p, a.d.cfg.batchSize)
	if err != nil {
		return 0, fmt.Errorf("postrelay: partition %d: fetch: %w", a.p, err)
	}
	a.nextHeld, a.hasHeld = res.nextHeld, res.hasHeld
	batch := res.batch
	if len(batch) == 0 {
		return 0, nil
	}
	// Drop the batch's payloads and events once done, so that an idle
	// partition holds no records in memory.
	defer func() {
		clear(a.pending[:cap(a.pending)])
		a.pending = a.pending[:0]
	}()
	fetchedAt := time.Now()
	fe := a.event(EventBatchFetched)
	fe.Count = len(batch)
	a.d.emit(fe)

	a.done.reset()
	a.pending = a.pending[:0]
	a.nextRetry = 0
	// Publishing keys in parallel pays off only when a publish waits on the
	// network; for a broker that answers in microseconds the goroutines
	// cost more than they save.
	if a.d.cfg.publishConcurrency == 1 || a.publishEWMA < parallelPublishThreshold {
		a.publishSequential(ctx, batch, fetchedAt)
	} else if lanes := a.lanes(batch); len(lanes) <= 1 {
		a.publishSequential(ctx, batch, fetchedAt)
	} else {
		a.publishLanes(ctx, batch, lanes, fetchedAt)
	}
	a.observePublishTimes()
	if a.done.empty() {
		return len(batch), nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.d.cfg.stopTimeout)
	defer cancel()
	if err := a.d.batch.completeBatch(cctx, a.p, a.st.epoch, &a.done); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			return len(batch), err
		}
		return len(batch), fmt.Errorf("postrelay: partition %d: complete batch: %w", a.p, err)
	}
	for _, e := range a.pending {
		a.st.apply(e)
		a.d.emit(e)
	}
	return len(batch), nil
}

// publishSequential publishes the batch in id order on this goroutine,
// skipping the later records of a key whose record failed.
func (a *partitionActor) publishSequential(ctx context.Context, batch []fetched, fetchedAt time.Time) {
	var blocked map[string]struct{} // keys with a failed record in this batch
	for i := range batch {
		r := &batch[i]
		if ctx.Err() != nil {
			return // stopping: complete what was published
		}
		a.drainMailbox()
		if !a.leaseValid() {
			return
		}
		if _, ok := blocked[r.key]; ok {
			continue // an earlier record of this key failed: keep order
		}
		out := a.deliver(ctx, r, fetchedAt)
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
	deadline.Store(a.st.leaseDeadline.UnixNano())
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
			for lane := range work {
				for _, i := range lane {
					if ctx.Err() != nil || !valid() {
						break
					}
					out := a.deliver(ctx, &batch[i], fetchedAt)
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
			if a.st.lost {
				deadline.Store(0)
			} else {
				deadline.Store(a.st.leaseDeadline.UnixNano())
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
		if a.nextRetry == 0 || o.delay < a.nextRetry {
			a.nextRetry = max(o.delay, time.Millisecond)
		}
	case EventDeadLettered:
		a.done.deadIDs = append(a.done.deadIDs, o.ev.RecordID)
		a.done.deadErrs = append(a.done.deadErrs, o.err)
	}
	a.pending = append(a.pending, o.ev)
}

// deliver publishes one record and returns the outcome. It is safe to call
// from several goroutines for records of different keys.
func (a *partitionActor) deliver(ctx context.Context, r *fetched, fetchedAt time.Time) outcome {
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

	pctx, cancel := context.WithTimeout(ctx, a.d.cfg.publishTimeout)
	defer cancel()
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
	if attempt >= a.d.cfg.maxAttempts {
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
