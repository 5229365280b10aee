package actors

import "time"

// EventKind says what happened to an actor.
type EventKind uint8

// Lifecycle event kinds, in the order an actor goes through them.
const (
	// EventStarted: Serve is about to be called (again).
	EventStarted EventKind = iota + 1
	// EventFailed: Serve returned an error that calls for a restart.
	EventFailed
	// EventPanicked: Serve panicked; Err is a *PanicError.
	EventPanicked
	// EventRestarting: a restart is scheduled after Delay.
	EventRestarting
	// EventStopped: the actor goroutine is exiting for good; Err is its
	// terminal error (nil on a clean stop).
	EventStopped
	// EventGaveUp: the decayed failure count passed FailureThreshold; an
	// EventStopped follows.
	EventGaveUp
)

// String returns the snake_case name of k, such as "gave_up".
func (k EventKind) String() string {
	switch k {
	case EventStarted:
		return "started"
	case EventFailed:
		return "failed"
	case EventPanicked:
		return "panicked"
	case EventRestarting:
		return "restarting"
	case EventStopped:
		return "stopped"
	case EventGaveUp:
		return "gave_up"
	}
	return "unknown"
}

// Event is one actor lifecycle event, given to SupervisorConfig.OnEvent.
type Event struct {
	Kind EventKind
	// Actor is the name the actor was spawned with.
	Actor string
	// Time is when the event happened, by SupervisorConfig.Now.
	Time time.Time
	// Err is the failure (EventFailed, EventPanicked, EventRestarting), the
	// terminal error (EventGaveUp, EventStopped), or nil.
	Err error
	// Delay is the restart delay (EventRestarting).
	Delay time.Duration
	// Failures is the decayed failure count after this failure (EventFailed,
	// EventPanicked, EventRestarting, EventGaveUp).
	Failures float64
}
