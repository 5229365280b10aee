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
// runs until ctx ends (then it should return promptly; what it returns is
// ignored) or until it is done (return nil) or fails (return an error, or
// panic): the supervisor then restarts it after a backoff. Returning an error
// that wraps ErrDoNotRestart ends it for good.
type Actor interface {
	Serve(ctx context.Context) error
}

// ActorFunc adapts a function to Actor.
type ActorFunc func(ctx context.Context) error

// Serve calls f(ctx).
func (f ActorFunc) Serve(ctx context.Context) error { return f(ctx) }

// Defaults for SupervisorConfig.
const (
	InitialBackoffDefault = 50 * time.Millisecond
	MaxBackoffDefault     = 10 * time.Second
	FailureDecayDefault   = 30 * time.Second
	StopTimeoutDefault    = 5 * time.Second
)

// restartJitter is the randomization factor of restart delays: ±20%.
const restartJitter = 0.2

// SupervisorConfig configures a Supervisor.
type SupervisorConfig struct {
	// Logger receives failure and restart logs, with messages prefixed
	// "actors:" and an "actor" attribute. nil discards them. Defaults to nil.
	Logger *slog.Logger
	// InitialBackoff is the restart delay when the decayed failure count is
	// about 1. Defaults to 50ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the restart delay. Defaults to 10s.
	MaxBackoff time.Duration
	// FailureDecay is the half-life of an actor's failure count: a failure
	// weighs half as much after FailureDecay, so an actor that fails now and
	// then restarts quickly while a restart storm backs off. Defaults to 30s.
	FailureDecay time.Duration
	// FailureThreshold gives up on an actor (its terminal error wraps
	// ErrTooManyFailures) once its decayed failure count exceeds it. 0 means
	// never give up. Defaults to 0.
	FailureThreshold float64
	// StopTimeout is the timeout of Ref.Stop and Supervisor.Stop when they
	// are given 0. Defaults to 5s.
	StopTimeout time.Duration
	// OnEvent, if set, is called synchronously from the actor's goroutine
	// for every lifecycle event. It must be cheap, must not block and must
	// not call back into the actor's Ref or the Supervisor's Stop or Wait.
	// Defaults to nil.
	OnEvent func(Event)
	// Now is the clock for the failure decay and event times, for tests;
	// restart delays themselves are real time. Defaults to time.Now.
	Now func() time.Time
}

// WithDefaults returns a copy of c with its zero fields set to their
// defaults.
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

// Validate returns an error wrapping ErrInvalidConfig that names the first
// invalid field and its value, or nil. Call it on WithDefaults' result.
func (c SupervisorConfig) Validate() error {
	switch {
	case c.InitialBackoff <= 0:
		return fmt.Errorf("%w: InitialBackoff = %v: must be positive", ErrInvalidConfig, c.InitialBackoff)
	case c.MaxBackoff < c.InitialBackoff:
		return fmt.Errorf("%w: MaxBackoff = %v: must be at least InitialBackoff (%v)", ErrInvalidConfig, c.MaxBackoff, c.InitialBackoff)
	case c.FailureDecay <= 0:
		return fmt.Errorf("%w: FailureDecay = %v: must be positive", ErrInvalidConfig, c.FailureDecay)
	case c.FailureThreshold < 0 || math.IsNaN(c.FailureThreshold) || math.IsInf(c.FailureThreshold, 0):
		return fmt.Errorf("%w: FailureThreshold = %v: must be a finite number, 0 or more", ErrInvalidConfig, c.FailureThreshold)
	case c.StopTimeout <= 0:
		return fmt.Errorf("%w: StopTimeout = %v: must be positive", ErrInvalidConfig, c.StopTimeout)
	}
	return nil
}

// Supervisor runs actors, each in its own goroutine, restarting them when
// they fail, and stops them. Its methods are safe for concurrent use.
type Supervisor struct {
	cfg SupervisorConfig

	mu      sync.Mutex
	refs    map[*Ref]struct{} // live actors
	running int               // actor goroutines not yet exited
	exited  *sync.Cond        // on mu, broadcast when running drops to 0
	stopped bool
}

// NewSupervisor returns a supervisor with cfg, given its defaults, or an
// error if cfg is invalid.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Supervisor{cfg: cfg, refs: make(map[*Ref]struct{})}
	s.exited = sync.NewCond(&s.mu)
	return s, nil
}

// Spawn starts a in a new goroutine under ctx and returns its Ref. A restart
// runs the same a again, so Spawn suits actors that keep no state between
// incarnations (such as an ActorFunc); SpawnFactory builds a fresh one for
// every start.
//
// When Serve returns an error or panics (the panic is recovered and turned
// into a *PanicError carrying the stack), the failure is counted and a is
// restarted after a backoff that grows with its decayed failure count. A nil
// return from Serve, or the end of ctx, ends the actor cleanly; an error
// wrapping ErrDoNotRestart, or too many failures, ends it with that error
// (see Ref.Err). Spawning on a stopped supervisor returns a Ref that is
// already done, with Err ErrStopped, and does not run a.
func (s *Supervisor) Spawn(ctx context.Context, name string, a Actor) *Ref {
	if a == nil {
		panic(fmt.Sprintf("actors: Spawn %q: nil Actor", name))
	}
	return s.spawn(ctx, name, func() Actor { return a }, a)
}

// SpawnFactory is Spawn for an actor built by newActor, which is called
// (in the actor's goroutine) before every start, the first and each
// restart: whatever state an incarnation held dies with it, and the next
// one rebuilds its own. A panic in newActor, or a nil actor from it, counts
// as a failure of that start.
func (s *Supervisor) SpawnFactory(ctx context.Context, name string, newActor func() Actor) *Ref {
	if newActor == nil {
		panic(fmt.Sprintf("actors: SpawnFactory %q: nil factory", name))
	}
	return s.spawn(ctx, name, newActor, nil)
}

// spawn is SpawnFactory; given is the actor Spawn was given (nil for
// SpawnFactory), see supervise.
func (s *Supervisor) spawn(ctx context.Context, name string, newActor func() Actor, given Actor) *Ref {
	ctx, cancel := context.WithCancelCause(ctx)
	r := &Ref{name: name, stopTimeout: s.cfg.StopTimeout, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		cancel(ErrStopped)
		r.err = ErrStopped
		close(r.done)
		r.notifyWatchers()
		return r
	}
	s.refs[r] = struct{}{}
	s.running++
	s.mu.Unlock()
	go s.supervise(ctx, r, newActor, given)
	return r
}

// Serve makes a Supervisor an Actor, so that supervisors nest: spawned under
// a parent, it runs until its context ends, then stops every actor it
// supervises (as Stop with SupervisorConfig.StopTimeout) and waits for their
// goroutines. It returns Stop's error, nil when they all exited in time. A
// supervisor serves once: once stopped it runs no new actor, so a parent
// that may restart it should spawn it with SpawnFactory and a new
// supervisor per start.
func (s *Supervisor) Serve(ctx context.Context) error {
	<-ctx.Done()
	if err := s.Stop(0); err != nil {
		return err
	}
	s.Wait()
	return nil
}

func (s *Supervisor) emit(e Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(e)
	}
}

// supervise runs a until it ends for good, then exits the actor. An actor
// given to Spawn that can be stopped (a nested Supervisor) but whose ctx
// ended before it ever ran is stopped here, and waited for, before it
// exits: actors may have been spawned on it meanwhile, and only its Serve
// would have stopped them — its parent's Stop would otherwise return with
// them still running.
func (s *Supervisor) supervise(ctx context.Context, r *Ref, newActor func() Actor, given Actor) {
	defer s.exit(r)
	served := false
	defer func() {
		if st, ok := given.(interface {
			Stop(time.Duration) error
			Wait()
		}); ok && !served {
			if err := st.Stop(0); err != nil {
				r.err = err
			}
			st.Wait()
		}
	}()
	log := s.cfg.Logger.With("actor", r.name)
	var (
		failures    float64   // decayed failure count
		lastFailure time.Time // by s.cfg.Now
	)
	for ctx.Err() == nil {
		served = true
		s.emit(Event{Kind: EventStarted, Actor: r.name, Time: s.cfg.Now()})
		err, panicked := serve(ctx, newActor)
		if err == nil || ctx.Err() != nil {
			return // done, or stopped: whatever Serve returned, the end is clean
		}
		if !panicked && errors.Is(err, ErrDoNotRestart) {
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
			r.err = fmt.Errorf("%w: actor %q: %.2f decayed failures over threshold %v, last: %w",
				ErrTooManyFailures, r.name, failures, s.cfg.FailureThreshold, err)
			log.Error("actors: giving up on actor", "failures", failures, "error", err, "panicked", panicked)
			s.emit(Event{Kind: EventGaveUp, Actor: r.name, Time: now, Err: r.err, Failures: failures})
			return
		}

		delay := restartDelay(s.cfg.InitialBackoff, s.cfg.MaxBackoff, failures, restartJitter)
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

// exit records that r's goroutine ends for good.
func (s *Supervisor) exit(r *Ref) {
	r.cancel(ErrStopped) // release the context's resources
	s.mu.Lock()
	delete(s.refs, r)
	s.mu.Unlock()
	s.emit(Event{Kind: EventStopped, Actor: r.name, Time: s.cfg.Now(), Err: r.err})
	close(r.done)
	r.notifyWatchers() // before running drops, so that Wait covers it
	s.mu.Lock()
	s.running--
	if s.running == 0 {
		s.exited.Broadcast()
	}
	s.mu.Unlock()
}

// serve builds and runs one incarnation, turning a panic into a
// *PanicError.
func serve(ctx context.Context, newActor func() Actor) (err error, panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			err, panicked = &PanicError{Value: v, Stack: debug.Stack()}, true
		}
	}()
	a := newActor()
	if a == nil {
		return errors.New("actors: the factory returned a nil Actor"), false
	}
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

// restartDelay returns the restart delay for a decayed failure count:
// initial · 2^(round(failures)−1) capped at maxDelay, randomized by ±jitter,
// and never above maxDelay. cenkalti/backoff does the growth and the jitter.
func restartDelay(initial, maxDelay time.Duration, failures, jitter float64) time.Duration {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(initial),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(jitter),
		backoff.WithMaxInterval(maxDelay),
		backoff.WithMaxElapsedTime(0),
	)
	// The interval reaches maxDelay after 1+⌈log2(maxDelay/initial)⌉ steps;
	// more steps would change nothing but cost time in a restart storm.
	steps := min(max(math.Round(failures), 1), 2+math.Ceil(math.Log2(float64(maxDelay)/float64(initial))))
	var d time.Duration
	for range int(steps) {
		d = b.NextBackOff()
	}
	return min(d, maxDelay)
}

// Len returns the number of live actors.
func (s *Supervisor) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.refs)
}

// Stop stops the supervisor: later Spawns do not run their actor, and every
// live actor is stopped as by Ref.Stop, all at once. Stop waits up to timeout
// (0 or less: SupervisorConfig.StopTimeout) for them all, and returns the
// ErrStopTimeout errors of those that did not exit in time, joined. It is
// idempotent; a later call waits again for actors that are still live.
func (s *Supervisor) Stop(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = s.cfg.StopTimeout
	}
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
	expired := false
	var errs []error
	for _, r := range refs {
		if !expired {
			select {
			case <-r.done:
				continue
			case <-deadline.C:
				expired = true
			}
		}
		select {
		case <-r.done:
		default:
			errs = append(errs, fmt.Errorf("%w: actor %q after %v", ErrStopTimeout, r.name, timeout))
		}
	}
	return errors.Join(errs...)
}

// Wait blocks until every actor goroutine has exited, which, unless the
// supervisor is stopped, may be never. Spawns during Wait extend it.
func (s *Supervisor) Wait() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.running > 0 {
		s.exited.Wait()
	}
}
