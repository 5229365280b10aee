// Package actors is a small supervised actor runtime. It knows nothing about
// outboxes.
//
// An actor is anything with Serve(ctx) error. A Supervisor runs each spawned
// actor in its own goroutine and owns it: Spawn returns a Ref to stop it and
// to wait for it, and Supervisor.Stop stops them all and waits.
//
// # Restarts
//
// When Serve returns an error or panics (the panic is recovered and turned
// into an error carrying the stack), the supervisor restarts it after a
// backoff. A nil return, or the end of the actor's context, ends the actor
// for good, as does an error wrapping ErrDoNotRestart (Ref.Err reports it).
//
// The backoff grows with a decaying failure count rather than with the
// number of consecutive failures, so a restart storm backs off and an actor
// that fails once an hour restarts at once:
//
//	failures = failures · 2^(−Δt / FailureDecay) + 1     (Δt: time since the last failure)
//	delay    = min(MaxBackoff, InitialBackoff · 2^(round(failures) − 1)) ± 20% jitter
//
// (cenkalti/backoff computes the growth and the jitter.) With
// FailureThreshold set, an actor whose decayed count passes it is given up
// (ErrTooManyFailures). Stopping an actor interrupts a pending backoff.
//
// # Messages
//
// Actors communicate by messages only. A Mailbox is bounded and has two
// lanes: Receive and TryReceive always drain the control lane (lifecycle
// messages such as "lease lost") before the data lane. Ready yields when a
// message may be waiting, for use in a select beside timers and wake-ups.
//
// A Waker carries coalescing wake-ups: a channel of capacity one with a
// non-blocking send, so any number of Wake calls between two receives wake
// the actor once.
package actors
