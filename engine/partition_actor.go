package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/postrelay/postrelay/actors"
)

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
	e       *Engine
	p       int
	mailbox *actors.Mailbox[leaseMsg]
	waker   *actors.Waker
	st      partitionState

	batch []fetched
	done  completion
	// pending holds the events of the batch in flight; they are applied and
	// emitted once the batch's completion is committed.
	pending []Event
}

func newPartitionActor(e *Engine, p int, epoch int64, deadline time.Time) *partitionActor {
	a := &partitionActor{
		e:       e,
		p:       p,
		mailbox: actors.NewMailbox[leaseMsg](1),
		waker:   e.wakers[p],
	}
	a.st.epoch = epoch
	a.st.leaseDeadline = deadline
	return a
}

// Serve runs until the lease is lost or ctx ends. A database error returns
// it to the supervisor, which restarts it with backoff; the restarted actor
// rebuilds its state from the database.
func (a *partitionActor) Serve(ctx context.Context) error {
	log := a.e.cfg.Logger.With("partition", a.p, "epoch", a.st.epoch)
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
			wait = a.e.cfg.PollInterval
		} else {
			n, err := a.runBatch(ctx)
			if err != nil {
				if errors.Is(err, ErrLeaseLost) {
					a.lose(err)
					return fmt.Errorf("%w: %w", actors.ErrDoNotRestart, err)
				}
				if ctx.Err() != nil {
					return nil
				}
				log.Warn("postrelay: partition batch failed", "error", err)
				return err
			}
			if n == a.e.cfg.BatchSize {
				continue // a full batch: more is waiting
			}
			wait = a.e.cfg.PollInterval
			if d, ok, err := a.e.store.nextAvailable(ctx, a.p); err == nil && ok && d < wait {
				wait = max(d, time.Millisecond)
			} else if err != nil && ctx.Err() == nil {
				return fmt.Errorf("postrelay: partition %d: next available: %w", a.p, err)
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
	a.e.cfg.Logger.Warn("postrelay: partition lease lost, stopping without committing", "partition", a.p, "epoch", a.st.epoch, "error", err)
	e := a.event(EventLeaseLost)
	e.Err = err
	a.st.apply(e)
	a.e.emit(e)
}

func (a *partitionActor) event(kind EventKind) Event {
	return Event{Kind: kind, Time: time.Now(), Instance: a.e.cfg.InstanceID, Partition: a.p, Epoch: a.st.epoch}
}

// runBatch fetches, publishes and completes one batch and returns how many
// records it fetched.
func (a *partitionActor) runBatch(ctx context.Context) (int, error) {
	batch, err := a.e.store.fetch(ctx, a.p, a.e.cfg.BatchSize, a.batch)
	if err != nil {
		return 0, fmt.Errorf("postrelay: partition %d: fetch: %w", a.p, err)
	}
	a.batch = batch
	if len(batch) == 0 {
		return 0, nil
	}
	fetchedAt := time.Now()
	fe := a.event(EventBatchFetched)
	fe.Count = len(batch)
	a.e.emit(fe)

	if sem := a.e.sem; sem != nil {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		case <-ctx.Done():
			return len(batch), nil
		}
	}

	a.done.reset()
	a.pending = a.pending[:0]
	var blocked map[string]struct{} // keys with a failed record in this batch
	for i := range batch {
		r := &batch[i]
		if ctx.Err() != nil {
			break // stopping: complete what was published
		}
		a.drainMailbox()
		if !a.leaseValid() {
			break
		}
		if _, ok := blocked[r.key]; ok {
			continue // an earlier record of this key failed: keep order
		}
		ok := a.deliver(ctx, r, fetchedAt)
		if !ok {
			if blocked == nil {
				blocked = make(map[string]struct{})
			}
			blocked[r.key] = struct{}{}
		}
	}
	if a.done.empty() {
		return len(batch), nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.e.cfg.StopTimeout)
	defer cancel()
	if err := a.e.store.complete(cctx, a.p, a.e.cfg.InstanceID, a.st.epoch, &a.done); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			return len(batch), err
		}
		return len(batch), fmt.Errorf("postrelay: partition %d: complete batch: %w", a.p, err)
	}
	for _, e := range a.pending {
		a.st.apply(e)
		a.e.emit(e)
	}
	return len(batch), nil
}

// deliver publishes one record and records the outcome in a.done; it
// reports whether the record was published.
func (a *partitionActor) deliver(ctx context.Context, r *fetched, fetchedAt time.Time) bool {
	attempt := r.attempts + 1
	ev := a.event(EventDelivered)
	ev.RecordID, ev.Key, ev.Topic, ev.MessageID, ev.Attempt = r.id, r.key, r.topic, r.messageID, attempt

	if r.mdErr != nil { // cannot be published as it is: dead-letter now
		ev.Kind, ev.Err = EventDeadLettered, r.mdErr
		a.done.deadIDs = append(a.done.deadIDs, r.id)
		a.done.deadErrs = append(a.done.deadErrs, r.mdErr.Error())
		a.pending = append(a.pending, ev)
		return false
	}

	md := r.metadata
	md[MetadataKey] = r.key
	md[MetadataRecordID] = strconv.FormatInt(r.id, 10)
	md[MetadataAttempt] = strconv.Itoa(attempt)
	md[MetadataPartition] = strconv.Itoa(a.p)
	msg := message.NewMessage(r.messageID, r.payload)
	msg.Metadata = md

	pctx, cancel := context.WithTimeout(ctx, a.e.cfg.PublishTimeout)
	defer cancel()
	var finish func(AttemptResult)
	if obs := a.e.cfg.Observer; obs != nil {
		pctx, finish = obs.StartAttempt(pctx, Attempt{
			Instance: a.e.cfg.InstanceID, Partition: a.p, RecordID: r.id, Key: r.key, Topic: r.topic,
			MessageID: r.messageID, Attempt: attempt, CreatedAt: r.createdAt, Metadata: md,
		}, msg)
	}
	msg.SetContext(pctx)

	start := time.Now()
	err := a.e.publish(r.topic, msg)
	ev.Duration = time.Since(start)
	ev.Lag = r.age + start.Sub(fetchedAt)

	if err == nil {
		a.done.delivered = append(a.done.delivered, r.id)
		a.pending = append(a.pending, ev)
		if finish != nil {
			finish(AttemptResult{Outcome: OutcomeDelivered, Duration: ev.Duration})
		}
		return true
	}
	ev.Err = err
	msgErr := truncateError(err)
	if attempt >= a.e.cfg.MaxAttempts {
		ev.Kind = EventDeadLettered
		a.done.deadIDs = append(a.done.deadIDs, r.id)
		a.done.deadErrs = append(a.done.deadErrs, msgErr)
		if finish != nil {
			finish(AttemptResult{Outcome: OutcomeDeadLettered, Err: err, Duration: ev.Duration})
		}
	} else {
		ev.Kind = EventFailed
		ev.Delay = a.e.cfg.retryDelay(attempt)
		a.done.retryIDs = append(a.done.retryIDs, r.id)
		a.done.retryErrs = append(a.done.retryErrs, msgErr)
		a.done.retryUS = append(a.done.retryUS, ev.Delay.Microseconds())
		if finish != nil {
			finish(AttemptResult{Outcome: OutcomeRetry, Err: err, Duration: ev.Duration})
		}
	}
	a.pending = append(a.pending, ev)
	return false
}

// truncateError keeps stored error texts bounded.
func truncateError(err error) string {
	s := err.Error()
	if len(s) > 2000 {
		s = s[:2000] + "…"
	}
	return s
}
