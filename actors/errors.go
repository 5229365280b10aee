package actors

import (
	"errors"
	"fmt"
)

var (
	// ErrDoNotRestart, returned (possibly wrapped) from Serve, ends the actor
	// for good: the supervisor does not restart it, and Ref.Err returns the
	// error Serve returned.
	ErrDoNotRestart = errors.New("actors: do not restart")

	// ErrStopped is the context cancel cause an actor sees when it is stopped
	// through Ref.Stop or Supervisor.Stop. It is also the terminal error of an
	// actor spawned on a supervisor that was already stopped.
	ErrStopped = errors.New("actors: stopped")

	// ErrStopTimeout is returned, wrapped with the actor's name, by Stop when
	// an actor did not exit in time.
	ErrStopTimeout = errors.New("actors: stop timed out")

	// ErrTooManyFailures ends an actor whose decayed failure count passed
	// SupervisorConfig.FailureThreshold. The terminal error wraps it and the
	// last failure.
	ErrTooManyFailures = errors.New("actors: too many failures")

	// ErrExited is returned by a TypedRef's Send and SendControl once the
	// actor has exited for good: nobody will read the message.
	ErrExited = errors.New("actors: actor exited")

	// ErrInvalidConfig wraps the error of SupervisorConfig.Validate.
	ErrInvalidConfig = errors.New("actors: invalid config")
)

// PanicError is the failure a panic in Serve is turned into. A panic always
// counts as a failure, even if its value wraps ErrDoNotRestart.
type PanicError struct {
	// Value is the value passed to panic.
	Value any
	// Stack is the stack of the panicking goroutine.
	Stack []byte
}

// Error returns the panic value followed by the stack.
func (e *PanicError) Error() string {
	return fmt.Sprintf("actors: panic: %v\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value if it is an error, so errors.Is and
// errors.As see through the panic.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
