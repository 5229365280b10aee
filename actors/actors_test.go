package actors_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postrelay/postrelay/actors"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// events collects supervisor events for assertions.
type events struct {
	mu  sync.Mutex
	ch  chan actors.Event
	all []actors.Event
}

func newEvents() *events { return &events{ch: make(chan actors.Event, 10000)} }

func (e *events) on(ev actors.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
	select {
	case e.ch <- ev:
	default:
	}
}

func (e *events) wait(t *testing.T, kind actors.EventKind) actors.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-e.ch:
			if ev.Kind == kind {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %v event within 10s", kind)
		}
	}
}

func (e *events) count(kind actors.EventKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.all {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func setup(t *testing.T, cfg actors.SupervisorConfig) (*actors.Supervisor, *events) {
	t.Helper()
	ev := newEvents()
	cfg.OnEvent = ev.on
	s, err := actors.NewSupervisor(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, s.Stop(5*time.Second))
		s.Wait()
	})
	return s, ev
}

func waitDone(t *testing.T, r *actors.Ref) {
	t.Helper()
	select {
	case <-r.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("actor %s did not end", r.Name())
	}
}

func TestRestartsOnErrorAndPanicThenEndsOnNil(t *testing.T) {
	t.Parallel()
	s, ev := setup(t, actors.SupervisorConfig{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "flaky", actors.ActorFunc(func(ctx context.Context) error {
		switch runs.Add(1) {
		case 1:
			return errors.New("boom")
		case 2:
			panic("kaboom")
		default:
			return nil
		}
	}))
	waitDone(t, r)
	require.NoError(t, r.Err())
	require.Equal(t, int32(3), runs.Load())
	require.Equal(t, 1, ev.count(actors.EventFailed))
	require.Equal(t, 1, ev.count(actors.EventPanicked))
	require.Equal(t, 2, ev.count(actors.EventRestarting))
	for _, e := range ev.all {
		if e.Kind == actors.EventPanicked {
			require.ErrorContains(t, e.Err, "kaboom")
			require.ErrorContains(t, e.Err, "goroutine") // the stack is kept
		}
	}
}

func TestErrDoNotRestartEndsTheActor(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, actors.SupervisorConfig{InitialBackoff: time.Millisecond})
	var runs atomic.Int32
	cause := errors.New("lease lost")
	r := s.Spawn(context.Background(), "once", actors.ActorFunc(func(ctx context.Context) error {
		runs.Add(1)
		return fmt.Errorf("partition 3: %w: %w", actors.ErrDoNotRestart, cause)
	}))
	waitDone(t, r)
	require.Equal(t, int32(1), runs.Load())
	require.ErrorIs(t, r.Err(), cause)
	require.ErrorIs(t, r.Err(), actors.ErrDoNotRestart)
}

func TestRestartStormBacksOffAndDecays(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(time.Unix(1000, 0).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	s, ev := setup(t, actors.SupervisorConfig{
		InitialBackoff: time.Microsecond, MaxBackoff: 50 * time.Microsecond, FailureDecay: time.Second, Now: clock,
	})
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "storm", actors.ActorFunc(func(ctx context.Context) error {
		if runs.Add(1) >= 300 {
			return nil
		}
		return errors.New("fail")
	}))
	waitDone(t, r)
	require.Equal(t, int32(300), runs.Load())
	// With a frozen clock nothing decays: the count grows by one per failure
	// and the delay reaches the cap.
	var last actors.Event
	var delays []time.Duration
	for _, e := range ev.all {
		if e.Kind == actors.EventRestarting {
			last = e
			delays = append(delays, e.Delay)
		}
	}
	require.InDelta(t, 299, last.Failures, 0.001)
	require.Equal(t, 50*time.Microsecond, delays[len(delays)-1])
	require.Less(t, delays[0], 2*time.Microsecond)

	// The same kind of actor, failing ten times, then once more after ten
	// half-lives: its count has decayed from 10 to 10/1024, plus the new one.
	var n atomic.Int32
	r2 := s.Spawn(context.Background(), "decaying", actors.ActorFunc(func(ctx context.Context) error {
		switch k := n.Add(1); {
		case k <= 10:
			return errors.New("fail")
		case k == 11:
			now.Add(int64(10 * time.Second))
			return errors.New("fail after a quiet spell")
		default:
			return nil
		}
	}))
	waitDone(t, r2)
	var fs []float64
	for _, e := range ev.all {
		if e.Kind == actors.EventRestarting && e.Actor == "decaying" {
			fs = append(fs, e.Failures)
		}
	}
	require.Len(t, fs, 11)
	require.InDelta(t, 10, fs[9], 0.001)
	require.InDelta(t, 1+10.0/1024, fs[10], 0.001)
}

func TestFailureThresholdGivesUp(t *testing.T) {
	t.Parallel()
	s, ev := setup(t, actors.SupervisorConfig{InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond, FailureThreshold: 5})
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "hopeless", actors.ActorFunc(func(ctx context.Context) error {
		runs.Add(1)
		return errors.New("always")
	}))
	waitDone(t, r)
	require.ErrorIs(t, r.Err(), actors.ErrTooManyFailures)
	require.Equal(t, int32(6), runs.Load())
	require.Equal(t, 1, ev.count(actors.EventGaveUp))
}

func TestStopDuringRestartBackoffReturnsPromptly(t *testing.T) {
	t.Parallel()
	s, ev := setup(t, actors.SupervisorConfig{InitialBackoff: time.Hour, MaxBackoff: time.Hour})
	r := s.Spawn(context.Background(), "sleepy", actors.ActorFunc(func(ctx context.Context) error {
		return errors.New("fail once, then wait an hour")
	}))
	ev.wait(t, actors.EventRestarting)
	start := time.Now()
	require.NoError(t, r.Stop(5*time.Second))
	require.Less(t, time.Since(start), 2*time.Second)
	require.NoError(t, r.Err())
	require.NoError(t, r.Stop(time.Second), "a second Stop is harmless")
}

func TestStopTimesOutOnActorIgnoringContext(t *testing.T) {
	t.Parallel()
	s, ev := setup(t, actors.SupervisorConfig{})
	release := make(chan struct{})
	r := s.Spawn(context.Background(), "stubborn", actors.ActorFunc(func(ctx context.Context) error {
		<-release
		return nil
	}))
	ev.wait(t, actors.EventStarted)
	err := r.Stop(20 * time.Millisecond)
	require.ErrorIs(t, err, actors.ErrStopTimeout)
	require.ErrorContains(t, err, "stubborn")
	close(release)
	waitDone(t, r)
}

func TestStopCancelsWithCauseAndParentCancelEnds(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, actors.SupervisorConfig{})
	causes := make(chan error, 1)
	r := s.Spawn(context.Background(), "a", actors.ActorFunc(func(ctx context.Context) error {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	}))
	require.NoError(t, r.Stop(5*time.Second))
	require.ErrorIs(t, <-causes, actors.ErrStopped)

	parent, cancel := context.WithCancel(context.Background())
	r2 := s.Spawn(parent, "b", actors.ActorFunc(func(ctx context.Context) error {
		<-ctx.Done()
		return errors.New("would restart, but the parent is gone")
	}))
	cancel()
	waitDone(t, r2)
	require.NoError(t, r2.Err())
}

func TestSupervisorStopsManyActorsAndRejectsLateSpawns(t *testing.T) {
	t.Parallel()
	s, err := actors.NewSupervisor(actors.SupervisorConfig{})
	require.NoError(t, err)
	started := make(chan struct{}, 200)
	for i := range 200 {
		s.Spawn(context.Background(), fmt.Sprint("actor-", i), actors.ActorFunc(func(ctx context.Context) error {
			started <- struct{}{}
			<-ctx.Done()
			return nil
		}))
	}
	for range 200 {
		<-started
	}
	require.Equal(t, 200, s.Len())
	require.NoError(t, s.Stop(5*time.Second))
	s.Wait()
	require.Zero(t, s.Len())
	require.NoError(t, s.Stop(time.Second))
	late := s.Spawn(context.Background(), "late", actors.ActorFunc(func(ctx context.Context) error {
		t.Error("a late actor ran")
		return nil
	}))
	waitDone(t, late)
	require.ErrorIs(t, late.Err(), actors.ErrStopped)
}

func TestConfigValidateNamesField(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg   actors.SupervisorConfig
		field string
	}{
		{actors.SupervisorConfig{InitialBackoff: -1}, "InitialBackoff"},
		{actors.SupervisorConfig{InitialBackoff: time.Second, MaxBackoff: time.Millisecond}, "MaxBackoff"},
		{actors.SupervisorConfig{FailureThreshold: -1}, "FailureThreshold"},
	} {
		_, err := actors.NewSupervisor(tc.cfg)
		require.ErrorIs(t, err, actors.ErrInvalidConfig)
		require.ErrorContains(t, err, tc.field+" = ")
	}
}

func TestMailboxDrainsControlLaneFirst(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[string](4)
	ctx := context.Background()
	require.NoError(t, m.Send(ctx, "d1"))
	require.NoError(t, m.Send(ctx, "d2"))
	require.NoError(t, m.SendControl(ctx, "c1"))
	require.True(t, m.TrySend("d3"))
	require.NoError(t, m.SendControl(ctx, "c2"))
	require.Equal(t, 5, m.Len())
	var got []string
	for range 5 {
		v, err := m.Receive(ctx)
		require.NoError(t, err)
		got = append(got, v)
	}
	require.Equal(t, []string{"c1", "c2", "d1", "d2", "d3"}, got)
	_, ok := m.TryReceive()
	require.False(t, ok)
}

func TestMailboxIsBounded(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[int](2)
	require.True(t, m.TrySend(1))
	require.True(t, m.TrySend(2))
	require.False(t, m.TrySend(3))
	ctx, cancel := context.WithCancelCause(context.Background())
	stopped := errors.New("caller gave up")
	cancel(stopped)
	require.ErrorIs(t, m.Send(ctx, 3), stopped)

	// A blocked Send proceeds once a receiver makes room.
	sent := make(chan error, 1)
	go func() { sent <- m.Send(context.Background(), 3) }()
	v, err := m.Receive(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, v)
	require.NoError(t, <-sent)
	require.Equal(t, 2, m.Len())

	_, err = actors.NewMailbox[int](1).Receive(ctx)
	require.ErrorIs(t, err, stopped)
}

func TestMailboxReadyInSelect(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[int](8)
	got := make(chan []int, 1)
	go func() {
		var vs []int
		for len(vs) < 100 {
			<-m.Ready()
			for {
				v, ok := m.TryReceive()
				if !ok {
					break
				}
				vs = append(vs, v)
			}
		}
		got <- vs
	}()
	for i := range 100 {
		require.NoError(t, m.Send(context.Background(), i))
	}
	vs := <-got
	for i, v := range vs {
		require.Equal(t, i, v)
	}
}

func TestWakerCoalesces(t *testing.T) {
	t.Parallel()
	w := actors.NewWaker()
	for range 1000 {
		w.Wake()
	}
	<-w.C()
	select {
	case <-w.C():
		t.Fatal("wake-ups did not coalesce")
	default:
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				w.Wake()
			}
		})
	}
	wg.Wait()
	<-w.C()
	require.Len(t, w.C(), 0)
}

func BenchmarkMailboxSendReceive(b *testing.B) {
	m := actors.NewMailbox[int](1024)
	ctx := context.Background()
	for b.Loop() {
		_ = m.Send(ctx, 1)
		_, _ = m.Receive(ctx)
	}
}

func BenchmarkWaker(b *testing.B) {
	w := actors.NewWaker()
	for b.Loop() {
		w.Wake()
		<-w.C()
	}
}
