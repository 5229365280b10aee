package actors

import (
	"context"
	"fmt"
	"time"
)

// Ref is a handle on a spawned actor, returned by Supervisor.Spawn. Its
// methods are safe for concurrent use.
type Ref struct {
	name        string
	stopTimeout time.Duration
	cancel      context.CancelCauseFunc
	done        chan struct{}
	err         error // terminal error, written before done is closed
}

// Name returns the name the actor was spawned with.
func (r *Ref) Name() string { return r.name }

// Done returns a channel closed when the actor goroutine has exited for good.
func (r *Ref) Done() <-chan struct{} { return r.done }

// Err returns the actor's terminal error once Done is closed, and nil before:
// nil after a clean stop (Serve returned nil, or its context ended), the
// error Serve returned wrapping ErrDoNotRestart, an error wrapping
// ErrTooManyFailures when the supervisor gave up, or ErrStopped when it was
// spawned on a stopped supervisor.
func (r *Ref) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Stop cancels the actor's context with cause ErrStopped, which also ends a
// restart backoff in progress, and waits up to timeout for the actor to exit
// (a timeout of 0 or less means SupervisorConfig.StopTimeout). If it did not
// exit in time, Stop returns an error wrapping ErrStopTimeout and naming the
// actor; the actor keeps its cancelled context and Done still closes when it
// eventually returns. Stop is idempotent.
func (r *Ref) Stop(timeout time.Duration) error {
	r.cancel(ErrStopped)
	select {
	case <-r.done:
		return nil
	default:
	}
	if timeout <= 0 {
		timeout = r.stopTimeout
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%w: actor %q after %v", ErrStopTimeout, r.name, timeout)
	}
}
