package adapters

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
)

// HandlerFunc is an in-process sink: it receives each message (its context
// carries the engine's publish deadline and trace span; TopicFromContext
// gives its topic) and returns nil once the message is handled. An error
// makes the engine retry the record with backoff and dead-letter it after
// MaxAttempts; wrap it with engine.Permanent to dead-letter at once. A
// panic is recovered and counts as an error.
type HandlerFunc func(ctx context.Context, msg *message.Message) error

type topicKey struct{}

// TopicFromContext returns the topic of the message a HandlerFunc was
// called with.
func TopicFromContext(ctx context.Context) string {
	s, _ := ctx.Value(topicKey{}).(string)
	return s
}

// HandlerPublisher is a message.Publisher calling a function for each
// message: handed to engine.New (directly or as a route's sink) it gives
// in-process handlers the engine's retries, backoff, dead letters, spans
// and metrics.
type HandlerPublisher struct {
	h      HandlerFunc
	closed atomic.Bool
}

// NewHandlerPublisher returns a publisher passing every message to h.
func NewHandlerPublisher(h HandlerFunc) *HandlerPublisher { return &HandlerPublisher{h: h} }

// Publish calls the handler for each message in turn and stops at the
// first error.
func (p *HandlerPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return ErrPublisherClosed
	}
	for _, msg := range msgs {
		if err := p.call(context.WithValue(msg.Context(), topicKey{}, topic), msg); err != nil {
			return err
		}
	}
	return nil
}

func (p *HandlerPublisher) call(ctx context.Context, msg *message.Message) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("adapters: handler panicked on message %s: %v\n%s", msg.UUID, v, debug.Stack())
		}
	}()
	return p.h(ctx, msg)
}

// Close makes later Publish calls fail with ErrPublisherClosed.
func (p *HandlerPublisher) Close() error {
	p.closed.Store(true)
	return nil
}
