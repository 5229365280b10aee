package actors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Actor is a unit of work run in its own goroutine by a Supervisor. Serve
// runs until ctx ends (return nil) or it fails (return an error, or panic):
// the supervisor then restarts it after a backoff. Returning an error that
// wraps ErrDoNotRestart ends it for good.
type Actor interface {
	Serve(ctx context.Context) error
}

// ActorFunc adapts a function to Actor.
type ActorFunc func(ctx context.Context) error

// Serve calls f.
func (f ActorFunc) Serve(ctx context.Context) error { return f(ctx) }

// Defaults for SupervisorConfig.
const (
	InitialBackoffDefault = 50 * time.Millisecond
	MaxBackoffDefault     = 10 * time.Second
	FailureDecayDefault   = 30 * time.Second
	StopTimeoutDefault    = 5 * time.Second
)

// SupervisorConfig configures restarts. The zero value is usable.
type SupervisorConfig struct {
	// Logger receives restart and failure logs. nil discards them.
	Logger *slog.Logger
	// InitialBackoff is the restart delay after a failure when the decayed
	// failure count is about 1. Defaults to 50ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the restart delay. Defaults to 10s.
	MaxBackoff time.Duration
	// FailureDecay is the half-life of the failure count: a failure counts
	// half as much after FailureDecay, so an actor that fails rarely restarts
	// quickly, and a restart storm backs off. Defaults to 30s.
	FailureDecay time.Duration
	// FailureThreshold ends an actor (ErrTooManyFailures) once its decayed
	// failure count exceeds it. 0 means never give up. Defaults to 0.
	FailureThreshold float64
	// StopTimeout is the timeout Stop uses when given 0. Defaults to 5s.
	StopTimeout time.Duration
	// OnEvent, if set, is called synchronously for every lifecycle event.
	// It must be cheap and must not block.
	OnEvent func(Event)
	// Now is the clock, for tests. Defaults to time.Now.
	Now func() time.Time
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c SupervisorConfig) WithDefaults() SupervisorConfig {
	c.InitialBackoff = cmp.Or(c.InitialBackoff, InitialBackoffDefault)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, MaxBackoffDefault)
	c.FailureDecay = cmp.Or(c.FailureDecay, FailureDecayDefault)
	c.StopTimeout = cmp.Or(c.StopTimeout, StopTimeoutDefault)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate names the first invalid field and its value.
func (c SupervisorConfig) Validate() error {
	switch {
	case c.InitialBackoff <= 0:
		return fmt.Errorf("%w: InitialBackoff = %v: must be positive", ErrInvalidConfig, c.InitialBackoff)
	case c.MaxBackoff < c.InitialBackoff:
		return fmt.Errorf("%w: MaxBackoff = %v: must be at least InitialBackoff (%v)", ErrInvalidConfig, c.MaxBackoff, c.InitialBackoff)
	case c.FailureDecay <= 0:
		return fmt.Errorf("%w: FailureDecay = %v: must be positive", ErrInvalidConfig, c.FailureDecay)
	case c.FailureThreshold < 0 || math.IsNaN(c.FailureThreshold):
		return fmt.Errorf("%w: FailureThreshold = %v: must not be negative", ErrInvalidConfig, c.FailureThreshold)
	case c.StopTimeout <= 0:
		return fmt.Errorf("%w: StopTimeout = %v: must be positive", ErrInvalidConfig, c.StopTimeout)
	}
	return nil
}

// EventKind says what happened to an actor.
type EventKind uint8

// Lifecycle event kinds.
const (
	EventStarted    EventKind = iota + 1 // Serve is called (again)
	EventFailed                          // Serve returned an error
	EventPanicked                        // Serve panicked
	EventRestarting                      // a restart is scheduled after Delay
	EventStopped                         // the actor ended for good (Err is its terminal error)
	EventGaveUp                          // the failure threshold was passed
)

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

// Event is one actor lifecycle event.
type Event struct {
	Kind     EventKind
	Actor    string
	Time     time.Time
	Err      error
	Delay    time.Duration // for EventRestarting
	Failures float64       // decayed failure count after this event
}

// Supervisor runs actors, each in its own goroutine, restarting them on
// failure.
type Supervisor struct {
	cfg     SupervisorConfig
	mu      sync.Mutex
	refs    map[*Ref]struct{}
	wg      sync.WaitGroup
	stopped bool
}

// NewSupervisor returns a supervisor; the config gets its defaults and is
// validated.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Supervisor{cfg: cfg, refs: make(map[*Ref]struct{})}, nil
}

// Ref is a handle on a spawned actor.
type Ref struct {
	name   string
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error // terminal error, set before done is closed
}

// Name returns the name the actor was spawned with.
func (r *Ref) Name() string { return r.name }

// Done is closed when the actor has exited for good.
func (r *Ref) Done() <-chan struct{} { return r.done }

// Err returns the actor's terminal error once Done is closed: nil after a
// clean stop, the error that wrapped ErrDoNotRestart, or one wrapping
// ErrTooManyFailures.
func (r *Ref) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Stop cancels the actor (its context's cause is ErrStopped), interrupting a
// restart backoff, and waits up to timeout for it to exit. It is safe to call
// more than once and from many goroutines.
func (r *Ref) Stop(timeout time.Duration) error {
	r.cancel(ErrStopped)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%w: actor %q after %v", ErrStopTimeout, r.name, timeout)
	}
}

// Spawn starts a under ctx in a new goroutine and returns its Ref. A nil
// return from Serve or the end of ctx ends the actor; an error or a panic
// restarts it after a backoff that grows with its decayed failure count.
// Spawning on a stopped supervisor returns a Ref that is already done.
func (s *Supervisor) Spawn(ctx context.Context, name string, a Actor) *Ref {
	ctx, cancel := context.WithCancelCause(ctx)
	r := &Ref{name: name, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		cancel(ErrStopped)
		r.err = ErrStopped
		close(r.done)
		return r
	}
	s.refs[r] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.supervise(ctx, r, a)
	return r
}

func (s *Supervisor) emit(e Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(e)
	}
}

func (s *Supervisor) supervise(ctx context.Context, r *Ref, a Actor) {
	defer func() {
		s.mu.Lock()
		delete(s.refs, r)
		s.mu.Unlock()
		r.cancel(ErrStopped)
		s.emit(Event{Kind: EventStopped, Actor: r.name, Time: s.cfg.Now(), Err: r.err})
		close(r.done)
		s.wg.Done()
	}()
	log := s.cfg.Logger.With("actor", r.name)
	var failures float64
	var lastFailure time.Time
	for {
		s.emit(Event{Kind: EventStarted, Actor: r.name, Time: s.cfg.Now()})
		err, panicked := serve(ctx, a)
		if ctx.Err() != nil {
			// Stopped: whatever Serve returned, the actor ends cleanly.
			return
		}
		if err == nil {
			return
		}
		if errors.Is(err, ErrDoNotRestart) {
			r.err = err
			return
		}
		now := s.cfg.Now()
		failures = decay(failures, now.Sub(lastFailure), s.cfg.FailureDecay) + 1
		lastFailure = now
		kind := EventFailed
		if panicked {
			kind = EventPanicked
		}
		s.emit(Event{Kind: kind, Actor: r.name, Time: now, Err: err, Failures: failures})
		if s.cfg.FailureThreshold > 0 && failures > s.cfg.FailureThreshold {
			r.err = fmt.Errorf("%w: actor %q: %.1f decayed failures, last: %w", ErrTooManyFailures, r.name, failures, err)
			log.Error("actors: giving up on actor", "failures", failures, "error", err)
			s.emit(Event{Kind: EventGaveUp, Actor: r.name, Time: now, Err: r.err, Failures: failures})
			return
		}
		delay := s.restartDelay(failures)
		log.Warn("actors: actor failed, restarting", "error", err, "panicked", panicked, "delay", delay, "failures", failures)
		s.emit(Event{Kind: EventRestarting, Actor: r.name, Time: now, Err: err, Delay: delay, Failures: failures})
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// serve runs one incarnation of a, turning a panic into an error.
func serve(ctx context.Context, a Actor) (err error, panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			err, panicked = fmt.Errorf("actors: panic: %v\n%s", p, debug.Stack()), true
		}
	}()
	return a.Serve(ctx), false
}

// decay returns the failure count f after it decayed for elapsed with the
// given half-life: f · 2^(−elapsed/halfLife).
func decay(f float64, elapsed, halfLife time.Duration) float64 {
	if f == 0 || elapsed <= 0 {
		return f
	}
	return f * math.Exp2(-float64(elapsed)/float64(halfLife))
}

// restartDelay is the exponential backoff for a decayed failure count:
// InitialBackoff · 2^(failures−1), capped at MaxBackoff, with ±20% jitter
// (cenkalti/backoff computes the growth and the jitter).
func (s *Supervisor) restartDelay(failures float64) time.Duration {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(s.cfg.InitialBackoff),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.2),
		backoff.WithMaxInterval(s.cfg.MaxBackoff),
		backoff.WithMaxElapsedTime(0),
	)
	steps := int(math.Max(math.Round(failures), 1))
	var d time.Duration
	for i := 0; i < steps; i++ {
		d = b.NextBackOff()
		if d >= s.cfg.MaxBackoff {
			break
		}
	}
	return min(d, s.cfg.MaxBackoff)
}

// Len returns how many actors are alive.
func (s *Supervisor) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.refs)
}

// Stop stops every actor concurrently and waits up to timeout (0: the
// configured StopTimeout) for all of them; later Spawns return done Refs. It
// is safe to call more than once.
func (s *Supervisor) Stop(timeout time.Duration) error {
	timeout = cmp.Or(timeout, s.cfg.StopTimeout)
	s.mu.Lock()
	s.stopped = true
	refs := make([]*Ref, 0, len(s.refs))
	for r := range s.refs {
		refs = append(refs, r)
	}
	s.mu.Unlock()
	for _, r := range refs {
		r.cancel(ErrStopped)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var errs []error
	for _, r := range refs {
		select {
		case <-r.done:
		case <-deadline.C:
			errs = append(errs, fmt.Errorf("%w: actor %q after %v", ErrStopTimeout, r.name, timeout))
			// Every later actor has had the same deadline.
			deadline.Reset(0)
		}
	}
	return errors.Join(errs...)
}

// Wait blocks until every actor goroutine has exited.
func (s *Supervisor) Wait() { s.wg.Wait() }
