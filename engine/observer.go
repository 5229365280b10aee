package engine

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Observer is the hook interface package tracing implements: one call per
// write (to carry trace context into the record), one per delivery attempt
// (to wrap it in a span) and one per event (for metrics). All methods must be
// safe for concurrent use and cheap.
type Observer interface {
	// InjectWrite may add trace context from ctx to a record's metadata
	// while it is being written.
	InjectWrite(ctx context.Context, metadata map[string]string)

	// StartAttempt is called before each publish. It returns the context
	// the message is published with (carried by msg.Context()) and the
	// AttemptFinisher whose FinishAttempt is called exactly once with the
	// attempt's outcome. It may add metadata to msg (such as the delivery
	// span's traceparent).
	StartAttempt(ctx context.Context, a Attempt, msg *message.Message) (context.Context, AttemptFinisher)

	// ObserveEvent receives every engine event.
	ObserveEvent(e Event)
}

// AttemptFinisher ends what Observer.StartAttempt started. It is an
// interface rather than a func so that an Observer can return the
// per-attempt state it already allocated instead of a new closure.
type AttemptFinisher interface {
	// FinishAttempt is called exactly once, with the attempt's outcome.
	FinishAttempt(r AttemptResult)
}

// Attempt describes one delivery attempt.
type Attempt struct {
	Instance  string
	Partition int
	RecordID  int64
	Key       string
	Topic     string
	MessageID string
	Attempt   int       // 1 for the first attempt
	CreatedAt time.Time // when the record was written (database clock)
	// Metadata is the record's stored metadata (it holds the writer's
	// traceparent when there was one). Do not modify it.
	Metadata map[string]string
}

// AttemptOutcome is what became of an attempt.
type AttemptOutcome uint8

// Attempt outcomes.
const (
	OutcomeDelivered    AttemptOutcome = iota + 1 // published
	OutcomeRetry                                  // failed, will be retried
	OutcomeDeadLettered                           // failed for the last time
)

func (o AttemptOutcome) String() string {
	switch o {
	case OutcomeDelivered:
		return "delivered"
	case OutcomeRetry:
		return "retry"
	case OutcomeDeadLettered:
		return "dead_lettered"
	}
	return "unknown"
}

// AttemptResult is passed to AttemptFinisher.FinishAttempt.
type AttemptResult struct {
	Outcome  AttemptOutcome
	Err      error
	Duration time.Duration
}
