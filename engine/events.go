package engine

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// EventKind says what happened.
type EventKind uint8

// The event kinds. Partition actors apply lease and attempt events to their
// state only after the durable change behind them is in PostgreSQL.
const (
	// EventLeaseAcquired: this instance took a partition's lease (new epoch).
	EventLeaseAcquired EventKind = iota + 1
	// EventLeaseReleased: this instance gave a partition up on purpose
	// (rebalance or shutdown).
	EventLeaseReleased
	// EventLeaseLost: a renewal or a fenced commit found the lease taken or
	// expired; the partition actor stopped without writing.
	EventLeaseLost
	// EventBatchFetched: a partition actor fetched Count records.
	EventBatchFetched
	// EventDelivered: a record was published and its completion committed.
	EventDelivered
	// EventFailed: a delivery attempt failed; the record will be retried
	// after Delay.
	EventFailed
	// EventDeadLettered: a record exhausted its attempts and was moved to the
	// dead letters.
	EventDeadLettered
	// EventInstancesChanged: the set of live instances seen by the
	// coordinator changed (Count live).
	EventInstancesChanged
	// EventActorRestarted: a supervised actor failed and is being restarted.
	EventActorRestarted
)

var eventKindNames = [...]string{
	EventLeaseAcquired:    "lease_acquired",
	EventLeaseReleased:    "lease_released",
	EventLeaseLost:        "lease_lost",
	EventBatchFetched:     "batch_fetched",
	EventDelivered:        "delivered",
	EventFailed:           "failed",
	EventDeadLettered:     "dead_lettered",
	EventInstancesChanged: "instances_changed",
	EventActorRestarted:   "actor_restarted",
}

func (k EventKind) String() string {
	if int(k) < len(eventKindNames) && eventKindNames[k] != "" {
		return eventKindNames[k]
	}
	return fmt.Sprintf("event_kind(%d)", uint8(k))
}

// Event is one typed lifecycle event. Fields that do not apply to a kind are
// zero.
type Event struct {
	Kind      EventKind
	Time      time.Time // local time the event was applied
	Instance  string
	Partition int
	Epoch     int64

	// Record fields, for delivered, failed and dead-lettered.
	RecordID  int64
	Key       string
	Topic     string
	MessageID string
	Attempt   int           // attempt number, 1 for the first
	Err       error         // the failure, for failed, dead-lettered, lease-lost and restarts
	Delay     time.Duration // retry backoff, for failed
	// Duration is how long the publish took (delivered, failed) and Lag the
	// time from the record's creation (database clock) to its publish.
	Duration time.Duration
	Lag      time.Duration

	Count int // records in a batch, or live instances

	// leaseUntil is the local lease deadline of the lease events a
	// partition actor applies to its own state (see partitionState).
	leaseUntil time.Time
}

// eventHub fans events out to subscribers without ever blocking the sender.
type eventHub struct {
	mu      sync.Mutex
	subs    []*subscription
	closed  bool
	buffer  int
	dropped atomic.Int64
}

// subscription is one Events channel and the kinds it wants.
type subscription struct {
	ch    chan Event
	kinds uint64 // bit k set: kind k wanted; 0: every kind
}

func (s *subscription) wants(k EventKind) bool {
	return s.kinds == 0 || (k < 64 && s.kinds&(1<<k) != 0)
}

// subscribe returns a new subscription's channel and the function that ends
// it (idempotent; it closes the channel).
func (h *eventHub) subscribe(kinds []EventKind) (<-chan Event, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub := &subscription{ch: make(chan Event, h.buffer)}
	for _, k := range kinds {
		if k < 64 {
			sub.kinds |= 1 << k
		}
	}
	if h.closed {
		close(sub.ch)
		return sub.ch, func() {}
	}
	h.subs = append(h.subs, sub)
	return sub.ch, func() { h.unsubscribe(sub) }
}

func (h *eventHub) unsubscribe(sub *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, s := range h.subs {
		if s == sub {
			h.subs = append(h.subs[:i], h.subs[i+1:]...)
			close(sub.ch)
			return
		}
	}
}

func (h *eventHub) emit(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs {
		if !s.wants(e.Kind) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			h.dropped.Add(1)
		}
	}
}

func (h *eventHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for _, s := range h.subs {
		close(s.ch)
	}
	h.subs = nil
}
