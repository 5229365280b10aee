package actors_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/actors"
)

// A supervisor is an actor: spawned under another one, it runs its own
// actors, and stopping the root stops the whole tree, leaves first.
func TestSupervisorsNest(t *testing.T) {
	t.Parallel()
	root, rec := setup(t, actors.SupervisorConfig{})
	rootCtx, cancelRoot := context.WithCancel(context.Background())
	rootDone := make(chan error, 1)
	go func() { rootDone <- root.Serve(rootCtx) }()

	child, err := actors.NewSupervisor(actors.SupervisorConfig{OnEvent: rec.on})
	require.NoError(t, err)
	childRef := root.Spawn(rootCtx, "child-supervisor", child)
	// This test stops a serving child supervisor (the root's cancel could
	// otherwise come before the child's goroutine starts: that order is
	// TestUnservedChildSupervisorStopsItsActors).
	rec.waitEvent(t, "child-supervisor", actors.EventStarted, 1)

	started := make(chan struct{}, 2)
	var leafStopped atomic.Int32
	leaf := actors.ActorFunc(func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		leafStopped.Add(1)
		return nil
	})
	child.Spawn(rootCtx, "leaf-1", leaf)
	child.Spawn(rootCtx, "leaf-2", leaf)
	recv(t, started)
	recv(t, started)
	require.Equal(t, 2, child.Len())

	cancelRoot()
	require.NoError(t, recv(t, rootDone), "the root stops the tree in time")
	require.Equal(t, int32(2), leafStopped.Load(), "the grandchildren stopped")
	require.True(t, isDone(childRef), "the child supervisor exited")
	require.Zero(t, child.Len())
	rec.waitEvent(t, "leaf-1", actors.EventStopped, 1)
	rec.waitEvent(t, "child-supervisor", actors.EventStopped, 1)

	// A stopped supervisor runs nothing more.
	late := child.Spawn(context.Background(), "late", leaf)
	require.ErrorIs(t, late.Err(), actors.ErrStopped)
}

// Serve returns Stop's timeout error when a child ignores its context.
func TestSupervisorServeReportsStopTimeout(t *testing.T) {
	t.Parallel()
	s, err := actors.NewSupervisor(actors.SupervisorConfig{StopTimeout: 20 * time.Millisecond})
	require.NoError(t, err)
	release := make(chan struct{})
	started := make(chan struct{})
	s.Spawn(context.Background(), "stubborn", actors.ActorFunc(func(ctx context.Context) error {
		close(started)
		<-release
		return nil
	}))
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = s.Serve(ctx)
	require.ErrorIs(t, err, actors.ErrStopTimeout)
	require.ErrorContains(t, err, `"stubborn"`)
	close(release)
	s.Wait()
}

// exitMsg is what a watching actor's mailbox carries in these tests.
type exitMsg struct {
	exit actors.Exit
	text string
}

// A watcher learns of its children's exits as messages in its own mailbox,
// with each child's terminal error, whatever ended it.
func TestWatchDeliversExitsAsMessages(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, actors.SupervisorConfig{InitialBackoff: time.Millisecond})
	ctx := context.Background()
	inbox := actors.NewMailbox[exitMsg](8)
	wrap := func(x actors.Exit) exitMsg { return exitMsg{exit: x} }

	fatal := fmt.Errorf("%w: lease gone", actors.ErrDoNotRestart)
	quitter := s.Spawn(ctx, "quitter", actors.ActorFunc(func(context.Context) error { return fatal }))
	actors.Watch(ctx, quitter, inbox, wrap)
	started := make(chan struct{})
	blocker := s.Spawn(ctx, "blocker", blockUntilDone(started))
	actors.Watch(ctx, blocker, inbox, wrap)
	<-started

	got := recvMsg(t, inbox)
	require.Same(t, quitter, got.exit.Ref)
	require.Equal(t, "quitter", got.exit.Name)
	require.ErrorIs(t, got.exit.Err, actors.ErrDoNotRestart)
	require.Equal(t, fatal, got.exit.Err)

	blocker.Cancel() // returns at once; the exit comes as a message
	got = recvMsg(t, inbox)
	require.Same(t, blocker, got.exit.Ref)
	require.NoError(t, got.exit.Err, "a stop is a clean exit")

	// Watching an actor that already exited still delivers its exit.
	actors.Watch(ctx, quitter, inbox, func(x actors.Exit) exitMsg { return exitMsg{exit: x, text: "late"} })
	got = recvMsg(t, inbox)
	require.Equal(t, "late", got.text)
	require.Same(t, quitter, got.exit.Ref)
	require.Zero(t, inbox.Len())
}

// A watcher that has gone (its context ended) does not keep an exiting
// child waiting on its full mailbox.
func TestWatchGivesUpWhenTheWatcherIsGone(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, actors.SupervisorConfig{})
	inbox := actors.NewMailbox[exitMsg](1)
	for range actors.ControlCapacity {
		require.True(t, inbox.TrySendControl(exitMsg{text: "filler"}))
	}
	watcherCtx, watcherGone := context.WithCancel(context.Background())
	r := s.Spawn(context.Background(), "child", actors.ActorFunc(func(context.Context) error { return nil }))
	actors.Watch(watcherCtx, r, inbox, func(x actors.Exit) exitMsg { return exitMsg{exit: x} })
	waitDone(t, r)
	watcherGone()
	waited := make(chan struct{})
	go func() {
		s.Wait()
		close(waited)
	}()
	recv(t, waited)
	require.Equal(t, actors.ControlCapacity, inbox.Len(), "the exit was dropped, not queued")
}

func recvMsg(t *testing.T, mb *actors.Mailbox[exitMsg]) exitMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	m, err := mb.Receive(ctx)
	require.NoError(t, err, "no message in time")
	return m
}

func isDone(r *actors.Ref) bool {
	select {
	case <-r.Done():
		return true
	default:
		return false
	}
}

// counter is an actor with state: it counts the messages it received and
// fails on "fail". A restart must not see the failed incarnation's count.
type counter struct {
	inbox *actors.Mailbox[string]
	seen  int
	gen   int
	out   chan<- string
}

func (c *counter) Serve(ctx context.Context) error {
	for {
		msg, err := c.inbox.Receive(ctx)
		if err != nil {
			return nil
		}
		c.seen++
		switch msg {
		case "fail":
			return errors.New("asked to fail")
		case "report":
			c.out <- fmt.Sprintf("gen %d saw %d", c.gen, c.seen)
		}
	}
}

// Every start builds a fresh actor: the state of a failed incarnation is
// gone, and the mailbox (and the TypedRef) survive the restart.
func TestRestartBuildsAFreshActor(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{InitialBackoff: time.Millisecond})
	out := make(chan string, 4)
	var gens atomic.Int32
	ref := actors.SpawnTyped(context.Background(), s, "counter", 8, func(mb *actors.Mailbox[string]) actors.Actor {
		return &counter{inbox: mb, gen: int(gens.Add(1)), out: out}
	})
	ctx := context.Background()
	require.NoError(t, ref.Send(ctx, "a"))
	require.NoError(t, ref.Send(ctx, "b"))
	require.NoError(t, ref.Send(ctx, "report"))
	require.Equal(t, "gen 1 saw 3", recv(t, out))
	require.NoError(t, ref.Send(ctx, "fail"))
	rec.waitEvent(t, "counter", actors.EventStarted, 2)
	require.NoError(t, ref.Send(ctx, "report"))
	require.Equal(t, "gen 2 saw 1", recv(t, out), "the restarted actor starts from scratch")
	require.Equal(t, int32(2), gens.Load())
}

// A factory that panics or returns nil fails that start, which is retried.
func TestSpawnFactoryFailuresAreRestarted(t *testing.T) {
	t.Parallel()
	s, rec := setup(t, actors.SupervisorConfig{InitialBackoff: time.Millisecond})
	var calls atomic.Int32
	ran := make(chan struct{})
	r := s.SpawnFactory(context.Background(), "built", func() actors.Actor {
		switch calls.Add(1) {
		case 1:
			panic("cannot build")
		case 2:
			return nil
		}
		return actors.ActorFunc(func(context.Context) error {
			close(ran)
			return nil
		})
	})
	recv(t, ran)
	waitDone(t, r)
	require.NoError(t, r.Err())
	require.Equal(t, 1, rec.count("built", actors.EventPanicked))
	require.Equal(t, 1, rec.count("built", actors.EventFailed))
	require.PanicsWithValue(t, `actors: SpawnFactory "x": nil factory`, func() { s.SpawnFactory(context.Background(), "x", nil) })
}

// A TypedRef sends to the actor without holding it; once the actor exited
// for good, sends fail with ErrExited instead of waiting forever.
func TestTypedRefSends(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, actors.SupervisorConfig{})
	type msg struct {
		n    int
		stop bool
	}
	got := make(chan int, 8)
	ref := actors.SpawnTyped(context.Background(), s, "typed", 1, func(mb *actors.Mailbox[msg]) actors.Actor {
		return actors.ActorFunc(func(ctx context.Context) error {
			for {
				m, err := mb.Receive(ctx)
				if err != nil {
					return nil
				}
				if m.stop {
					return fmt.Errorf("%w: asked to", actors.ErrDoNotRestart)
				}
				got <- m.n
			}
		})
	})
	ctx := context.Background()
	require.NoError(t, ref.Send(ctx, msg{n: 1}))
	require.Equal(t, 1, recv(t, got))
	require.NoError(t, ref.SendControl(ctx, msg{n: 2}))
	require.Equal(t, 2, recv(t, got))
	require.Eventually(t, func() bool { return ref.TrySend(msg{n: 3}) }, waitTimeout, time.Millisecond)
	require.Equal(t, 3, recv(t, got))
	require.Equal(t, "typed", ref.Name())

	require.NoError(t, ref.SendControl(ctx, msg{stop: true}))
	waitDone(t, ref.Ref)
	require.ErrorIs(t, ref.Err(), actors.ErrDoNotRestart)
	require.ErrorIs(t, ref.Send(ctx, msg{n: 4}), actors.ErrExited)
	require.ErrorIs(t, ref.SendControl(ctx, msg{n: 4}), actors.ErrExited)
	require.False(t, ref.TrySend(msg{n: 4}))
	require.False(t, ref.TrySendControl(msg{n: 4}))
}

// A send blocked on a full mailbox ends when the actor exits.
func TestTypedRefBlockedSendEndsOnExit(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, actors.SupervisorConfig{})
	release := make(chan struct{})
	ref := actors.SpawnTyped(context.Background(), s, "busy", 1, func(mb *actors.Mailbox[int]) actors.Actor {
		return actors.ActorFunc(func(ctx context.Context) error {
			<-release // never reads its mailbox
			return nil
		})
	})
	require.NoError(t, ref.Send(context.Background(), 1))
	blocked := make(chan error, 1)
	go func() { blocked <- ref.Send(context.Background(), 2) }()
	close(release)
	require.ErrorIs(t, recv(t, blocked), actors.ErrExited)
}

// A child supervisor whose context ended before it ever ran (its parent
// was stopping, say) still stops the actors spawned on it, and its Ref is
// done only once they exited: its parent's Stop does not return with
// grandchildren still running. Afterwards it runs nothing more.
func TestUnservedChildSupervisorStopsItsActors(t *testing.T) {
	t.Parallel()
	root, rec := setup(t, actors.SupervisorConfig{})
	child, err := actors.NewSupervisor(actors.SupervisorConfig{OnEvent: rec.on})
	require.NoError(t, err)
	started := make(chan struct{}, 1)
	var leafStopped atomic.Int32
	leaf := child.Spawn(context.Background(), "leaf", actors.ActorFunc(func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		leafStopped.Add(1)
		return nil
	}))
	recv(t, started)

	ended, cancel := context.WithCancel(context.Background())
	cancel()
	childRef := root.Spawn(ended, "child-supervisor", child)
	select {
	case <-childRef.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the unserved child supervisor did not exit")
	}
	require.True(t, isDone(leaf), "the leaf exited before the child supervisor's Ref was done")
	require.Equal(t, int32(1), leafStopped.Load())
	require.Zero(t, child.Len())
	late := child.Spawn(context.Background(), "late", actors.ActorFunc(func(ctx context.Context) error { return nil }))
	require.ErrorIs(t, late.Err(), actors.ErrStopped)
}
