package actors_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/actors"
)

// waitTimeout bounds every wait in these tests; it is only reached when a
// test fails.
const waitTimeout = 10 * time.Second

// recorder collects supervisor events.
type recorder struct {
	mu      sync.Mutex
	events  []actors.Event
	changed chan struct{} // capacity 1: events changed
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) on(e actors.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// all returns the events so far, optionally only those of actor.
func (r *recorder) all(actor string) []actors.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if actor == "" {
		return slices.Clone(r.events)
	}
	var evs []actors.Event
	for _, e := range r.events {
		if e.Actor == actor {
			evs = append(evs, e)
		}
	}
	return evs
}

func (r *recorder) count(actor string, kind actors.EventKind) int {
	n := 0
	for _, e := range r.all(actor) {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// waitFor waits until cond holds for the events recorded so far.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]actors.Event) bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		if cond(r.all("")) {
			return
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; events: %v", what, kinds(r.all("")))
		}
	}
}

// waitEvent waits until actor has had n events of kind.
func (r *recorder) waitEvent(t *testing.T, actor string, kind actors.EventKind, n int) {
	t.Helper()
	r.waitFor(t, actor+" "+kind.String(), func([]actors.Event) bool { return r.count(actor, kind) >= n })
}

func kinds(evs []actors.Event) []string {
	s := make([]string, len(evs))
	for i, e := range evs {
		s[i] = e.Actor + ":" + e.Kind.String()
	}
	return s
}

// setup returns a supervisor with cfg and its event recorder; the supervisor
// is stopped and waited for at the end of the test.
func setup(t *testing.T, cfg actors.SupervisorConfig) (*actors.Supervisor, *recorder) {
	t.Helper()
	rec := newRecorder()
	cfg.OnEvent = rec.on
	s, err := actors.NewSupervisor(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, s.Stop(waitTimeout))
		s.Wait()
	})
	return s, rec
}

// waitDone waits until the actor has exited for good.
func waitDone(t *testing.T, r *actors.Ref) {
	t.Helper()
	select {
	case <-r.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("actor %s did not end", r.Name())
	}
}

// recv waits for a value on ch.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting on a channel")
		panic("unreachable")
	}
}

// fakeClock is a settable clock for the failure decay.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// blockUntilDone is an actor that waits for its context to end.
func blockUntilDone(started chan<- struct{}) actors.Actor {
	return actors.ActorFunc(func(ctx context.Context) error {
		if started != nil {
			started <- struct{}{}
		}
		<-ctx.Done()
		return nil
	})
}
