package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAttemptContextTimesOutAndTheNextOneIsLive(t *testing.T) {
	at := newAttemptTimeouts(context.Background(), 50*time.Millisecond)
	defer at.close()

	started := time.Now()
	ctx := at.start()
	d, ok := ctx.Deadline()
	require.True(t, ok)
	require.WithinDuration(t, started.Add(50*time.Millisecond), d, 20*time.Millisecond)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the attempt context was not done 5s after its 50ms timeout")
	}
	require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
	require.ErrorIs(t, context.Cause(ctx), context.DeadlineExceeded)
	at.end()

	next := at.start()
	require.NoError(t, next.Err(), "the attempt after a timed-out one starts a new generation")
	at.end()
}

func TestAttemptContextsRearmTheTimerPerAttempt(t *testing.T) {
	const timeout = 100 * time.Millisecond
	at := newAttemptTimeouts(context.Background(), timeout)
	var kept []context.Context
	// Attempts of 10ms each for three timeouts' worth: none may time out,
	// although their shared generation lives longer than one timeout.
	for start := time.Now(); time.Since(start) < 3*timeout; {
		ctx := at.start()
		kept = append(kept, ctx)
		select {
		case <-ctx.Done():
			t.Fatalf("attempt %d timed out after 10ms of a %v timeout: %v", len(kept), timeout, context.Cause(ctx))
		case <-time.After(10 * time.Millisecond):
		}
		at.end()
	}
	require.Greater(t, len(kept), 10)
	require.NoError(t, kept[0].Err(), "an earlier attempt's context stays alive until close")

	at.close()
	for _, ctx := range kept {
		require.ErrorIs(t, ctx.Err(), context.Canceled, "close ends every attempt context given out")
	}
}

func TestAttemptContextFollowsItsParent(t *testing.T) {
	parentDeadline := time.Now().Add(time.Minute)
	parent, cancel := context.WithDeadline(context.WithValue(context.Background(), ctxKey{}, "v"), parentDeadline)
	at := newAttemptTimeouts(parent, time.Hour)
	defer at.close()

	ctx := at.start()
	d, _ := ctx.Deadline()
	require.Equal(t, parentDeadline, d, "an earlier parent deadline bounds the attempt's")
	require.Equal(t, "v", ctx.Value(ctxKey{}))

	// A context derived from the attempt's ends with it.
	child, stopChild := context.WithCancel(ctx)
	defer stopChild()
	cancel()
	<-ctx.Done()
	<-child.Done()
	require.ErrorIs(t, ctx.Err(), context.Canceled)
	require.False(t, errors.Is(ctx.Err(), context.DeadlineExceeded))
	at.end()
}

type ctxKey struct{}
