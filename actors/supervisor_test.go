package actors_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/actors"
)

func TestServeReturningNilEndsTheActor(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{})
	r := s.Spawn(context.Background(), "once", actors.ActorFunc(func(ctx context.Context) error { return nil }))
	require.Equal(t, "once", r.Name())
	waitDone(t, r)
	require.NoError(t, r.Err())
	s.Wait()
	require.Zero(t, s.Len())
	require.Equal(t, []string{"once:started", "once:stopped"}, kinds(rec.all("once")))
}

func TestRestartsOnErrorAndPanic(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{InitialBackoff: time.Microsecond, MaxBackoff: time.Millisecond})
	boom := errors.New("boom")
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "flaky", actors.ActorFunc(func(ctx context.Context) error {
		switch runs.Add(1) {
		case 1:
			return fmt.Errorf("fetch: %w", boom)
		case 2:
			panic("kaboom")
		case 3:
			panic(fmt.Errorf("wrapped: %w", boom))
		default:
			return nil
		}
	}))
	waitDone(t, r)
	require.NoError(t, r.Err())
	require.Equal(t, int32(4), runs.Load())

	evs := rec.all("flaky")
	require.Equal(t, []string{
		"flaky:started", "flaky:failed", "flaky:restarting",
		"flaky:started", "flaky:panicked", "flaky:restarting",
		"flaky:started", "flaky:panicked", "flaky:restarting",
		"flaky:started", "flaky:stopped",
	}, kinds(evs))
	require.ErrorIs(t, evs[1].Err, boom)
	require.ErrorIs(t, evs[2].Err, boom, "restarting carries the failure")
	require.Positive(t, evs[2].Delay)

	var pe *actors.PanicError
	require.ErrorAs(t, evs[4].Err, &pe)
	require.Equal(t, "kaboom", pe.Value)
	require.Contains(t, string(pe.Stack), "supervisor_test.go", "the stack shows where it panicked")
	require.ErrorContains(t, pe, "actors: panic: kaboom")
	require.NotErrorIs(t, evs[4].Err, boom)
	require.ErrorIs(t, evs[7].Err, boom, "a panic with an error unwraps to it")
}

func TestErrDoNotRestartEndsTheActorForGood(t *testing.T) {
	t.Parallel()
	leaseLost := errors.New("lease lost")
	for name, err := range map[string]error{
		"bare":           actors.ErrDoNotRestart,
		"wrapped":        fmt.Errorf("partition 3: %w: %w", actors.ErrDoNotRestart, leaseLost),
		"wrapped twice":  fmt.Errorf("run: %w", fmt.Errorf("partition 3: %w", actors.ErrDoNotRestart)),
		"joined":         errors.Join(leaseLost, actors.ErrDoNotRestart),
		"after failures": actors.ErrDoNotRestart,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, rec := setup(t, actors.SupervisorConfig{InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond})
			var runs atomic.Int32
			failFirst := name == "after failures"
			r := s.Spawn(context.Background(), name, actors.ActorFunc(func(ctx context.Context) error {
				if runs.Add(1) < 3 && failFirst {
					return errors.New("transient")
				}
				return err
			}))
			waitDone(t, r)
			require.ErrorIs(t, r.Err(), actors.ErrDoNotRestart)
			require.Equal(t, err, r.Err(), "Err is what Serve returned")
			if failFirst {
				require.Equal(t, int32(3), runs.Load())
			} else {
				require.Equal(t, int32(1), runs.Load())
			}
			if failFirst {
				require.Equal(t, 2, rec.count(name, actors.EventFailed))
			} else {
				require.Zero(t, rec.count(name, actors.EventFailed))
			}
			stopped := rec.all(name)[len(rec.all(name))-1]
			require.Equal(t, actors.EventStopped, stopped.Kind)
			require.Equal(t, err, stopped.Err)
		})
	}
}

func TestPanicIsAlwaysAFailure(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond})
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "panicky", actors.ActorFunc(func(ctx context.Context) error {
		if runs.Add(1) == 1 {
			panic(fmt.Errorf("oops: %w", actors.ErrDoNotRestart))
		}
		return nil
	}))
	waitDone(t, r)
	require.NoError(t, r.Err())
	require.Equal(t, int32(2), runs.Load(), "a panic wrapping ErrDoNotRestart is restarted")
	require.Equal(t, 1, rec.count("panicky", actors.EventPanicked))
}

func TestRestartStormBackoffGrowsToTheCap(t *testing.T) {
	t.Parallel()
	const (
		initial  = time.Microsecond
		maxDelay = 64 * time.Microsecond
		storm    = 300
	)
	clock := newFakeClock() // frozen: nothing decays
	s, rec := setup(t, actors.SupervisorConfig{
		InitialBackoff: initial, MaxBackoff: maxDelay, FailureDecay: time.Second, Now: clock.Now,
	})
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "storm", actors.ActorFunc(func(ctx context.Context) error {
		if runs.Add(1) > storm {
			return nil
		}
		return errors.New("fail")
	}))
	waitDone(t, r)
	require.NoError(t, r.Err())
	require.Equal(t, int32(storm+1), runs.Load())

	var restarts []actors.Event
	for _, e := range rec.all("storm") {
		if e.Kind == actors.EventRestarting {
			restarts = append(restarts, e)
		}
	}
	require.Len(t, restarts, storm)
	for i, e := range restarts {
		n := i + 1
		require.InDelta(t, float64(n), e.Failures, 1e-9, "failure %d: the count grows by one per failure", n)
		interval := min(initial<<min(n-1, 30), maxDelay)
		lo := time.Duration(0.8 * float64(interval))
		hi := min(time.Duration(1.2*float64(interval))+1, maxDelay)
		require.True(t, e.Delay >= lo && e.Delay <= hi,
			"failure %d: delay %v not in [%v, %v]", n, e.Delay, lo, hi)
	}
	require.Less(t, restarts[0].Delay, restarts[5].Delay, "the backoff grows")
}

func TestFailureCountDecays(t *testing.T) {
	t.Parallel()
	const halfLife = time.Minute
	clock := newFakeClock()
	s, rec := setup(t, actors.SupervisorConfig{
		InitialBackoff: time.Microsecond, MaxBackoff: time.Millisecond, FailureDecay: halfLife, Now: clock.Now,
	})
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "decaying", actors.ActorFunc(func(ctx context.Context) error {
		switch n := runs.Add(1); {
		case n <= 10:
			return errors.New("storm")
		case n == 11:
			clock.Advance(halfLife)
			return errors.New("one half-life later")
		case n == 12:
			clock.Advance(10 * halfLife)
			return errors.New("after a quiet spell")
		default:
			return nil
		}
	}))
	waitDone(t, r)
	var restarts []actors.Event
	for _, e := range rec.all("decaying") {
		if e.Kind == actors.EventRestarting {
			restarts = append(restarts, e)
		}
	}
	require.Len(t, restarts, 12)
	require.InDelta(t, 10, restarts[9].Failures, 1e-9)
	require.InDelta(t, 10.0/2+1, restarts[10].Failures, 1e-9)
	require.InDelta(t, 6.0/1024+1, restarts[11].Failures, 1e-9)
	require.GreaterOrEqual(t, restarts[9].Delay, time.Duration(0.8*512*float64(time.Microsecond)))
	require.LessOrEqual(t, restarts[11].Delay, time.Duration(1.2*float64(time.Microsecond))+1,
		"once the count has decayed, a failure restarts at once")
}

func TestFailureThresholdGivesUp(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s, rec := setup(t, actors.SupervisorConfig{
		InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond, FailureThreshold: 5, Now: clock.Now,
	})
	boom := errors.New("always")
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "hopeless", actors.ActorFunc(func(ctx context.Context) error {
		runs.Add(1)
		return boom
	}))
	waitDone(t, r)
	require.ErrorIs(t, r.Err(), actors.ErrTooManyFailures)
	require.ErrorIs(t, r.Err(), boom, "the terminal error keeps the last failure")
	require.ErrorContains(t, r.Err(), `"hopeless"`)
	require.Equal(t, int32(6), runs.Load())
	require.Equal(t, 5, rec.count("hopeless", actors.EventRestarting))
	evs := rec.all("hopeless")
	require.Equal(t, []string{"hopeless:failed", "hopeless:gave_up", "hopeless:stopped"}, kinds(evs[len(evs)-3:]))
	require.InDelta(t, 6, evs[len(evs)-2].Failures, 1e-9)
	require.Equal(t, r.Err(), evs[len(evs)-1].Err)
}

func TestFailureThresholdIsNotReachedWhileFailuresDecay(t *testing.T) {
	t.Parallel()
	const halfLife = time.Minute
	clock := newFakeClock()
	s, rec := setup(t, actors.SupervisorConfig{
		InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond, FailureDecay: halfLife,
		FailureThreshold: 1.5, Now: clock.Now,
	})
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "steady", actors.ActorFunc(func(ctx context.Context) error {
		if runs.Add(1) > 100 {
			return nil
		}
		// One failure every two half-lives: the count tends to 1/(1−¼) = 4/3.
		clock.Advance(2 * halfLife)
		return errors.New("now and then")
	}))
	waitDone(t, r)
	require.NoError(t, r.Err())
	require.Zero(t, rec.count("steady", actors.EventGaveUp))
	var last float64
	for _, e := range rec.all("steady") {
		if e.Kind == actors.EventRestarting {
			require.LessOrEqual(t, e.Failures, 4.0/3+1e-9)
			last = e.Failures
		}
	}
	require.InDelta(t, 4.0/3, last, 1e-9)
}

func TestStopDuringRestartBackoffReturnsPromptly(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{InitialBackoff: time.Hour, MaxBackoff: time.Hour})
	r := s.Spawn(context.Background(), "sleepy", actors.ActorFunc(func(ctx context.Context) error {
		return errors.New("fail once, then wait an hour")
	}))
	rec.waitEvent(t, "sleepy", actors.EventRestarting, 1)
	start := time.Now()
	require.NoError(t, r.Stop(waitTimeout))
	require.Less(t, time.Since(start), time.Second)
	require.NoError(t, r.Err())
	require.Equal(t, 1, rec.count("sleepy", actors.EventStarted))
	require.NoError(t, r.Stop(time.Nanosecond), "a second Stop is harmless")
}

func TestSupervisorStopDuringRestartBackoffReturnsPromptly(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{InitialBackoff: time.Hour, MaxBackoff: time.Hour})
	for i := range 10 {
		s.Spawn(context.Background(), fmt.Sprint("sleepy-", i), actors.ActorFunc(func(ctx context.Context) error {
			return errors.New("fail")
		}))
	}
	rec.waitFor(t, "10 restarts", func(evs []actors.Event) bool {
		n := 0
		for _, e := range evs {
			if e.Kind == actors.EventRestarting {
				n++
			}
		}
		return n == 10
	})
	start := time.Now()
	require.NoError(t, s.Stop(waitTimeout))
	require.Less(t, time.Since(start), time.Second)
	s.Wait()
	require.Zero(t, s.Len())
}

func TestParentCancelEndsWithoutRestart(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{InitialBackoff: time.Hour, MaxBackoff: time.Hour})
	shutdown := errors.New("shutting down")

	t.Run("while serving", func(t *testing.T) {
		parent, cancel := context.WithCancelCause(context.Background())
		causes := make(chan error, 1)
		started := make(chan struct{})
		r := s.Spawn(parent, "serving", actors.ActorFunc(func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return errors.New("an error after the end of ctx is not a failure")
		}))
		recv(t, started)
		cancel(shutdown)
		waitDone(t, r)
		require.NoError(t, r.Err())
		require.ErrorIs(t, recv(t, causes), shutdown, "the actor sees the parent's cause")
		require.Zero(t, rec.count("serving", actors.EventFailed))
		require.Equal(t, 1, rec.count("serving", actors.EventStarted))
	})

	t.Run("during backoff", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		r := s.Spawn(parent, "backing-off", actors.ActorFunc(func(ctx context.Context) error {
			return errors.New("fail")
		}))
		rec.waitEvent(t, "backing-off", actors.EventRestarting, 1)
		cancel()
		waitDone(t, r)
		require.NoError(t, r.Err())
		require.Equal(t, 1, rec.count("backing-off", actors.EventStarted))
	})

	t.Run("before start", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		cancel()
		r := s.Spawn(parent, "never", actors.ActorFunc(func(ctx context.Context) error {
			t.Error("an actor spawned with an ended context ran")
			return nil
		}))
		waitDone(t, r)
		require.NoError(t, r.Err())
		require.Equal(t, []string{"never:stopped"}, kinds(rec.all("never")))
	})
}

func TestStopCancelsWithErrStopped(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, actors.SupervisorConfig{})
	causes := make(chan error, 2)
	started := make(chan struct{}, 2)
	actor := actors.ActorFunc(func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	})
	r := s.Spawn(context.Background(), "by-ref", actor)
	recv(t, started)
	require.NoError(t, r.Stop(waitTimeout))
	require.ErrorIs(t, recv(t, causes), actors.ErrStopped)
	require.NoError(t, r.Err())

	s.Spawn(context.Background(), "by-supervisor", actor)
	recv(t, started)
	require.NoError(t, s.Stop(waitTimeout))
	require.ErrorIs(t, recv(t, causes), actors.ErrStopped)
}

func TestRefStopTimesOutOnActorIgnoringContext(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{StopTimeout: 30 * time.Millisecond})
	release := make(chan struct{})
	r := s.Spawn(context.Background(), "stubborn", actors.ActorFunc(func(ctx context.Context) error {
		<-release
		return errors.New("returned late")
	}))
	rec.waitEvent(t, "stubborn", actors.EventStarted, 1)

	err := r.Stop(10 * time.Millisecond)
	require.ErrorIs(t, err, actors.ErrStopTimeout)
	require.ErrorContains(t, err, `"stubborn"`)
	require.ErrorContains(t, err, "10ms")
	err = r.Stop(0)
	require.ErrorIs(t, err, actors.ErrStopTimeout)
	require.ErrorContains(t, err, "30ms", "Stop(0) uses StopTimeout")
	select {
	case <-r.Done():
		t.Fatal("Done closed while the actor still runs")
	default:
	}
	require.NoError(t, r.Err(), "no terminal error before Done")

	close(release)
	waitDone(t, r)
	require.NoError(t, r.Err(), "a stopped actor ends cleanly, whatever it returns")
	require.NoError(t, r.Stop(time.Nanosecond))
	require.Zero(t, rec.count("stubborn", actors.EventFailed))
}

func TestSupervisorStopTimesOutAndWaitWaits(t *testing.T) {
	t.Parallel()
	s, err := actors.NewSupervisor(actors.SupervisorConfig{StopTimeout: 20 * time.Millisecond})
	require.NoError(t, err)
	release := make(chan struct{})
	started := make(chan struct{}, 5)
	for _, name := range []string{"good-1", "mule-1", "good-2", "mule-2", "good-3"} {
		s.Spawn(context.Background(), name, actors.ActorFunc(func(ctx context.Context) error {
			started <- struct{}{}
			if strings.HasPrefix(name, "mule") {
				<-release
				return nil
			}
			<-ctx.Done()
			return nil
		}))
	}
	for range 5 {
		recv(t, started)
	}

	err = s.Stop(0)
	require.ErrorIs(t, err, actors.ErrStopTimeout)
	require.ErrorContains(t, err, `"mule-1"`)
	require.ErrorContains(t, err, `"mule-2"`)
	require.NotContains(t, err.Error(), "good")
	require.Equal(t, 2, s.Len())

	waited := make(chan struct{})
	go func() {
		s.Wait()
		close(waited)
	}()
	select {
	case <-waited:
		t.Fatal("Wait returned while two actors still run")
	default:
	}
	close(release)
	recv(t, waited)
	require.Zero(t, s.Len())
	require.NoError(t, s.Stop(time.Nanosecond), "a second Stop is harmless")
}

func TestStopIsIdempotentAndConcurrencySafe(t *testing.T) {
	t.Parallel()
	s, err := actors.NewSupervisor(actors.SupervisorConfig{})
	require.NoError(t, err)
	started := make(chan struct{}, 1)
	r := s.Spawn(context.Background(), "a", blockUntilDone(started))
	recv(t, started)
	errs := make(chan error, 40)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { errs <- r.Stop(waitTimeout) })
		wg.Go(func() { errs <- s.Stop(waitTimeout) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	s.Wait()
	s.Wait()
	require.NoError(t, s.Stop(0))
	require.NoError(t, r.Stop(0))
}

func TestSpawnOnStoppedSupervisorDoesNotRun(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{})
	require.NoError(t, s.Stop(0))
	r := s.Spawn(context.Background(), "late", actors.ActorFunc(func(ctx context.Context) error {
		t.Error("a late actor ran")
		return nil
	}))
	waitDone(t, r)
	require.ErrorIs(t, r.Err(), actors.ErrStopped)
	require.NoError(t, r.Stop(0))
	require.Zero(t, s.Len())
	require.Empty(t, rec.all(""))
}

func TestSpawnNilActorPanics(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, actors.SupervisorConfig{})
	require.PanicsWithValue(t, `actors: Spawn "x": nil Actor`, func() { s.Spawn(context.Background(), "x", nil) })
}

func TestManyActorsConcurrently(t *testing.T) {
	t.Parallel()
	const n = 400
	s, rec := setup(t, actors.SupervisorConfig{InitialBackoff: time.Microsecond, MaxBackoff: 100 * time.Microsecond})
	ready := make(chan struct{}, n)
	refs := make([]*actors.Ref, n)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < n; i += 8 {
				var runs atomic.Int32
				fail := int32(i % 4) // fail 0 to 3 times, then serve until stopped
				refs[i] = s.Spawn(context.Background(), fmt.Sprint("actor-", i), actors.ActorFunc(func(ctx context.Context) error {
					if k := runs.Add(1); k <= fail {
						if k%2 == 0 {
							panic("panic " + fmt.Sprint(k))
						}
						return errors.New("fail")
					}
					ready <- struct{}{}
					<-ctx.Done()
					return nil
				}))
			}
		})
	}
	wg.Wait()
	for range n {
		recv(t, ready)
	}
	require.Equal(t, n, s.Len())
	wantRestarts := 0
	for i := range n {
		wantRestarts += i % 4
	}
	require.Equal(t, wantRestarts, len(filter(rec.all(""), actors.EventRestarting)))
	require.NoError(t, s.Stop(waitTimeout))
	s.Wait()
	require.Zero(t, s.Len())
	for _, r := range refs {
		waitDone(t, r)
		require.NoError(t, r.Err())
	}
	require.Len(t, filter(rec.all(""), actors.EventStopped), n)
}

func TestSpawnRacingStop(t *testing.T) {
	t.Parallel()
	s, err := actors.NewSupervisor(actors.SupervisorConfig{})
	require.NoError(t, err)
	refs := make(chan *actors.Ref, 400)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				refs <- s.Spawn(context.Background(), fmt.Sprint(g, "-", i), blockUntilDone(nil))
			}
		})
	}
	wg.Go(func() { require.NoError(t, s.Stop(waitTimeout)) })
	wg.Wait()
	close(refs)
	s.Wait()
	for r := range refs {
		waitDone(t, r)
		if err := r.Err(); err != nil {
			require.ErrorIs(t, err, actors.ErrStopped, "only a Spawn after Stop fails")
		}
	}
	require.Zero(t, s.Len())
}

func TestLoggerUsesPrefixAndSnakeCase(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer // written by the actor goroutine only, read after Done
	s, _ := setup(t, actors.SupervisorConfig{
		Logger:         slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond, FailureThreshold: 1.5,
	})
	var runs atomic.Int32
	r := s.Spawn(context.Background(), "logged", actors.ActorFunc(func(ctx context.Context) error {
		if runs.Add(1) == 1 {
			panic("first")
		}
		return errors.New("second")
	}))
	waitDone(t, r)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2, buf.String())
	snake := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	for _, line := range lines {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec))
		require.True(t, strings.HasPrefix(rec["msg"].(string), "actors: "), line)
		require.Equal(t, "logged", rec["actor"])
		for k := range rec {
			require.Regexp(t, snake, k)
		}
	}
}

func TestSupervisorConfig(t *testing.T) {
	t.Parallel()

	t.Run("WithDefaults", func(t *testing.T) {
		t.Parallel()
		cfg := actors.SupervisorConfig{}.WithDefaults()
		require.Equal(t, actors.InitialBackoffDefault, cfg.InitialBackoff)
		require.Equal(t, actors.MaxBackoffDefault, cfg.MaxBackoff)
		require.Equal(t, actors.FailureDecayDefault, cfg.FailureDecay)
		require.Equal(t, actors.StopTimeoutDefault, cfg.StopTimeout)
		require.Zero(t, cfg.FailureThreshold)
		require.NotNil(t, cfg.Logger)
		require.NotNil(t, cfg.Now)
		require.NoError(t, cfg.Validate())

		set := actors.SupervisorConfig{InitialBackoff: 1, MaxBackoff: 2, FailureDecay: 3, StopTimeout: 4, FailureThreshold: 5}.WithDefaults()
		require.Equal(t, time.Duration(1), set.InitialBackoff)
		require.Equal(t, time.Duration(2), set.MaxBackoff)
		require.Equal(t, time.Duration(3), set.FailureDecay)
		require.Equal(t, time.Duration(4), set.StopTimeout)
		require.Equal(t, 5.0, set.FailureThreshold)
	})

	for _, tc := range []struct {
		name string
		cfg  actors.SupervisorConfig
		want string
	}{
		{"negative InitialBackoff", actors.SupervisorConfig{InitialBackoff: -time.Second}, "InitialBackoff = -1s"},
		{"MaxBackoff below InitialBackoff", actors.SupervisorConfig{InitialBackoff: time.Second, MaxBackoff: time.Millisecond}, "MaxBackoff = 1ms"},
		{"negative FailureDecay", actors.SupervisorConfig{FailureDecay: -time.Minute}, "FailureDecay = -1m0s"},
		{"negative FailureThreshold", actors.SupervisorConfig{FailureThreshold: -1}, "FailureThreshold = -1"},
		{"NaN FailureThreshold", actors.SupervisorConfig{FailureThreshold: math.NaN()}, "FailureThreshold = NaN"},
		{"infinite FailureThreshold", actors.SupervisorConfig{FailureThreshold: math.Inf(1)}, "FailureThreshold = +Inf"},
		{"negative StopTimeout", actors.SupervisorConfig{StopTimeout: -time.Second}, "StopTimeout = -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.WithDefaults().Validate()
			require.ErrorIs(t, err, actors.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
			_, err = actors.NewSupervisor(tc.cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}

	t.Run("zero value without defaults is invalid", func(t *testing.T) {
		t.Parallel()
		require.ErrorContains(t, actors.SupervisorConfig{}.Validate(), "InitialBackoff = 0s")
	})
}

func TestEventKindString(t *testing.T) {
	t.Parallel()
	for kind, want := range map[actors.EventKind]string{
		actors.EventStarted:    "started",
		actors.EventFailed:     "failed",
		actors.EventPanicked:   "panicked",
		actors.EventRestarting: "restarting",
		actors.EventStopped:    "stopped",
		actors.EventGaveUp:     "gave_up",
		0:                      "unknown",
	} {
		require.Equal(t, want, kind.String())
	}
}

func filter(evs []actors.Event, kind actors.EventKind) []actors.Event {
	var out []actors.Event
	for _, e := range evs {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}
