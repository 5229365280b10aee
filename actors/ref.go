package actors

import (
	"context"
	"fmt"
	"sync"
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

	mu       sync.Mutex
	exited   bool         // the exit was reported to the watchers
	watchers []func(Exit) // called once, from the actor's goroutine, when it exits
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

// Cancel asks the actor to stop, as Stop does, without waiting for it. A
// watcher (see Watch) learns when it has exited.
func (r *Ref) Cancel() { r.cancel(ErrStopped) }

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

// Exit reports that a watched actor exited for good (see Watch).
type Exit struct {
	// Ref is the actor that exited.
	Ref *Ref
	// Name is the name it was spawned with.
	Name string
	// Err is its terminal error, as Ref.Err returns it.
	Err error
}

// Watch delivers r's exit as a message to the watcher's mailbox to: once r
// has exited for good, wrap(Exit) is sent on to's control lane, so an actor
// learns that a child ended among its other messages, in its own goroutine,
// with no goroutine per child waiting on Done. The send is made from r's
// goroutine as it exits; it waits while the control lane is full, until ctx
// (the watcher's context) ends, when the exit is dropped: a watcher that is
// gone needs no news. Watching an actor that has already exited delivers its
// exit at once, from a new goroutine.
func Watch[M any](ctx context.Context, r *Ref, to *Mailbox[M], wrap func(Exit) M) {
	deliver := func(x Exit) { _ = to.SendControl(ctx, wrap(x)) }
	r.mu.Lock()
	if !r.exited {
		r.watchers = append(r.watchers, deliver)
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	go deliver(Exit{Ref: r, Name: r.name, Err: r.err})
}

// notifyWatchers reports the exit to every watcher. It is called once, by
// the actor's goroutine, after done is closed.
func (r *Ref) notifyWatchers() {
	r.mu.Lock()
	r.exited = true
	ws := r.watchers
	r.watchers = nil
	r.mu.Unlock()
	for _, w := range ws {
		w(Exit{Ref: r, Name: r.name, Err: r.err})
	}
}

// TypedRef is a Ref bundled with the actor's mailbox: whoever holds it can
// send the actor messages of type T without holding the actor itself. The
// mailbox outlives the actor's restarts (each incarnation reads the same
// one), so a TypedRef stays valid for the actor's whole life. Its methods
// are safe for concurrent use.
type TypedRef[T any] struct {
	*Ref
	mailbox *Mailbox[T]
}

// Send puts msg on the actor's data lane, waiting while it is full, until
// ctx ends (it then returns context.Cause(ctx)) or the actor exits for good
// (ErrExited).
func (r *TypedRef[T]) Send(ctx context.Context, msg T) error {
	return r.mailbox.sendUntil(ctx, r.done, msg, &r.mailbox.data, r.mailbox.dataSpace)
}

// SendControl puts msg on the actor's control lane, waiting while it is
// full, until ctx ends or the actor exits for good (ErrExited).
func (r *TypedRef[T]) SendControl(ctx context.Context, msg T) error {
	return r.mailbox.sendUntil(ctx, r.done, msg, &r.mailbox.control, r.mailbox.controlSpace)
}

// TrySend puts msg on the data lane and reports whether it did: false when
// the lane is full or the actor has exited. It never blocks.
func (r *TypedRef[T]) TrySend(msg T) bool {
	if r.exitedForGood() {
		return false
	}
	return r.mailbox.TrySend(msg)
}

// TrySendControl is TrySend on the control lane.
func (r *TypedRef[T]) TrySendControl(msg T) bool {
	if r.exitedForGood() {
		return false
	}
	return r.mailbox.TrySendControl(msg)
}

func (r *Ref) exitedForGood() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// SpawnTyped spawns an actor with a mailbox whose data lane holds capacity
// messages, and returns a TypedRef for sending to it. newActor is called on
// every (re)start with that same mailbox and must return a fresh actor, so
// that a restart rebuilds the actor's state instead of reusing what the
// failed incarnation left behind (see Supervisor.SpawnFactory).
func SpawnTyped[T any](ctx context.Context, s *Supervisor, name string, capacity int, newActor func(mailbox *Mailbox[T]) Actor) *TypedRef[T] {
	if newActor == nil {
		panic(fmt.Sprintf("actors: SpawnTyped %q: nil constructor", name))
	}
	mb := NewMailbox[T](capacity)
	ref := s.SpawnFactory(ctx, name, func() Actor { return newActor(mb) })
	return &TypedRef[T]{Ref: ref, mailbox: mb}
}
