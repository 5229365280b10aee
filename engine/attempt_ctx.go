package engine

import (
	"context"
	"fmt"
	"time"
)

// errAttemptTimeout is the cause of an attempt context that reached its
// deadline (see attemptTimeouts).
var errAttemptTimeout = fmt.Errorf("postrelay: publish attempt exceeded PublishTimeout: %w", context.DeadlineExceeded)

// attemptTimeouts makes the contexts of the publish attempts one goroutine
// makes in turn: each attempt's context is done PublishTimeout after the
// attempt started, or when the goroutine's context is, and reports that
// deadline.
//
// context.WithTimeout per attempt allocated a context and a timer and
// registered the context with its parent, then removed it: about a tenth
// of a relay's CPU in profiles of `bench drain`. Here consecutive attempts
// share one cancelable context (a generation) and one timer, re-armed for
// each attempt; only a timeout, which cancels the generation, starts a new
// one. So an attempt's context stays alive after its Publish returned,
// until the goroutine's batch ends (close) or a later attempt of the same
// generation times out.
type attemptTimeouts struct {
	parent  context.Context
	timeout time.Duration
	gen     context.Context // nil: start a new generation
	cancel  context.CancelCauseFunc
	timer   *time.Timer
}

func newAttemptTimeouts(parent context.Context, timeout time.Duration) *attemptTimeouts {
	return &attemptTimeouts{parent: parent, timeout: timeout}
}

// start returns the context of an attempt starting now; end must follow
// once its Publish returned.
func (t *attemptTimeouts) start() context.Context {
	if t.gen == nil {
		gen, cancel := context.WithCancelCause(t.parent)
		t.gen, t.cancel = gen, cancel
		t.timer = time.AfterFunc(t.timeout, func() { cancel(errAttemptTimeout) })
	} else {
		t.timer.Reset(t.timeout)
	}
	d := time.Now().Add(t.timeout)
	if pd, ok := t.parent.Deadline(); ok && pd.Before(d) {
		d = pd
	}
	return &attemptCtx{Context: t.gen, deadline: d}
}

// end disarms the timer after an attempt. If it fired, the generation is
// cancelled (or about to be): the next attempt starts a new one.
func (t *attemptTimeouts) end() {
	if !t.timer.Stop() {
		t.gen, t.cancel, t.timer = nil, nil, nil
	}
}

// close ends the current generation: every attempt context it gave out is
// done now (with context.Canceled).
func (t *attemptTimeouts) close() {
	if t.gen != nil {
		t.timer.Stop()
		t.cancel(context.Canceled)
		t.gen, t.cancel, t.timer = nil, nil, nil
	}
}

// attemptCtx is one attempt's context: its generation's cancellation and
// values, its own deadline. Err is context.DeadlineExceeded once the
// attempt timed out (context.Cause says so for contexts derived from it,
// whose Err is context.Canceled then).
type attemptCtx struct {
	context.Context
	deadline time.Time
}

func (c *attemptCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *attemptCtx) Err() error {
	err := c.Context.Err()
	if err != nil && context.Cause(c.Context) == errAttemptTimeout {
		return context.DeadlineExceeded
	}
	return err
}
