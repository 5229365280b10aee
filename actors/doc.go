// Package actors is a small supervised actor runtime. It knows nothing about
// outboxes.
//
// # Actors and the supervisor
//
// An actor is anything with Serve(ctx) error. A Supervisor runs each spawned
// actor in its own goroutine and owns it: Spawn returns a Ref to stop the
// actor and to wait for it; Supervisor.Stop stops them all, and
// Supervisor.Wait waits until every actor goroutine has exited. Stopping
// cancels the actor's context with cause ErrStopped and waits for Serve to
// return, up to a timeout (ErrStopTimeout); Ref.Cancel asks without waiting.
// Stop is idempotent.
//
// SpawnFactory takes a constructor instead of an actor and calls it before
// every start, the first and each restart, so an actor with state rebuilds
// it on every start rather than reuse what a failed incarnation left; Spawn
// runs the same value each time, for actors without state.
//
// # Trees
//
// A Supervisor is itself an Actor: its Serve runs until its context ends,
// then stops its actors and waits for them. Spawned under another
// supervisor it makes a tree, and stopping the root stops everything below
// it — a supervisor given to Spawn whose context ended before it ever ran
// is stopped and waited for all the same. An actor can also own a supervisor for the children it starts, as
// postrelay's coordinator does for its partition actors.
//
// Watch delivers a child's exit to its parent as a message: once the child
// has exited for good, an Exit (its Ref, name and terminal error) wrapped in
// the parent's message type is put on the parent's control lane, from the
// child's own goroutine, so the parent learns of it among its other
// messages without a goroutine per child.
//
// SpawnTyped gives an actor a mailbox and returns a TypedRef[T]: the Ref
// plus typed Send, SendControl, TrySend and TrySendControl, so senders hold
// the reference, not the actor. The mailbox lives as long as the Ref, across
// restarts; sends to an actor that exited for good fail with ErrExited.
//
// # Restart policy
//
// How an incarnation of Serve ends decides what happens next:
//
//	Serve returns nil                   → the actor ends, Ref.Err() == nil
//	the actor's context ends            → the actor ends, Ref.Err() == nil
//	Serve returns an error wrapping     → the actor ends, Ref.Err() is that error
//	  ErrDoNotRestart
//	Serve returns another error, or     → a failure: counted, then a restart
//	  panics (recovered as *PanicError)   after a backoff (stopping interrupts it)
//
// The backoff grows with a decaying failure count rather than with the number
// of consecutive failures, so a restart storm backs off while an actor that
// fails once an hour restarts at once. On each failure, with Δt the time since
// the previous one:
//
//	failures = failures · 2^(−Δt / FailureDecay) + 1
//	delay    = min(MaxBackoff, InitialBackoff · 2^(round(failures) − 1) · (1 ± 20%))
//
// (cenkalti/backoff computes the growth and the jitter.) An actor failing
// without pause sees its count grow by one per failure and its delay double up
// to MaxBackoff; once it calms down the count halves every FailureDecay. With
// FailureThreshold set, an actor whose count exceeds it is given up: it ends
// with an error wrapping ErrTooManyFailures and the last failure.
//
// SupervisorConfig.OnEvent sees every lifecycle event (started, failed,
// panicked, restarting with its delay, gave_up, stopped) synchronously, for
// metrics and for tests.
//
// # Messages
//
// Actors communicate by messages only, never by shared mutable state. A
// Mailbox is bounded and has two FIFO lanes: a data lane with the capacity
// given to NewMailbox and a control lane of ControlCapacity for lifecycle
// messages (such as "lease lost"). Receive and TryReceive always drain the
// control lane before the data lane. Send and SendControl block while their
// lane is full, until their context ends; TrySend never blocks. Ready yields
// when a message may be waiting, so an actor can select on its mailbox beside
// timers, wake-ups and its context, then TryReceive.
//
// A Waker carries coalescing wake-ups ("there may be new work"): a channel of
// capacity one with a non-blocking send, so any number of Wake calls between
// two receives from C wake the actor once, and a waker never blocks.
package actors
