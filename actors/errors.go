package actors

import "errors"

var (
	// ErrDoNotRestart, returned (possibly wrapped) from Serve, ends the actor
	// for good: the supervisor does not restart it.
	ErrDoNotRestart = errors.New("actors: do not restart")

	// ErrStopped is the context cancel cause an actor sees when it is stopped
	// through Ref.Stop or Supervisor.Stop.
	ErrStopped = errors.New("actors: stopped")

	// ErrStopTimeout is returned by Stop when an actor did not exit in time.
	ErrStopTimeout = errors.New("actors: stop timed out")

	// ErrTooManyFailures ends an actor whose decayed failure count passed
	// SupervisorConfig.FailureThreshold.
	ErrTooManyFailures = errors.New("actors: too many failures")

	// ErrInvalidConfig wraps configuration errors.
	ErrInvalidConfig = errors.New("actors: invalid config")
)
