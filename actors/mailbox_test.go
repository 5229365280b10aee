package actors_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/actors"
)

func receiveN[T any](t *testing.T, m *actors.Mailbox[T], n int) []T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	out := make([]T, 0, n)
	for range n {
		v, err := m.Receive(ctx)
		require.NoError(t, err)
		out = append(out, v)
	}
	return out
}

func TestMailboxDrainsControlLaneFirst(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[string](4)
	ctx := context.Background()
	require.NoError(t, m.Send(ctx, "d1"))
	require.NoError(t, m.Send(ctx, "d2"))
	require.NoError(t, m.SendControl(ctx, "c1"))
	require.True(t, m.TrySend("d3"))
	require.True(t, m.TrySendControl("c2"))
	require.NoError(t, m.Send(ctx, "d4"))
	require.Equal(t, 6, m.Len())

	require.Equal(t, []string{"c1", "c2", "d1"}, receiveN(t, m, 3))
	require.NoError(t, m.SendControl(ctx, "c3"))
	require.Equal(t, []string{"c3", "d2", "d3", "d4"}, receiveN(t, m, 4), "a late control message overtakes queued data")
	_, ok := m.TryReceive()
	require.False(t, ok)
	require.Zero(t, m.Len())
}

func TestMailboxControlOvertakesAFullDataLane(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[int](100)
	for i := range 100 {
		require.True(t, m.TrySend(i))
	}
	require.False(t, m.TrySend(100))
	require.NoError(t, m.SendControl(context.Background(), -1))
	v, ok := m.TryReceive()
	require.True(t, ok)
	require.Equal(t, -1, v)
	v, ok = m.TryReceive()
	require.True(t, ok)
	require.Zero(t, v)
}

func TestMailboxIsBounded(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[int](2)
	require.True(t, m.TrySend(1))
	require.True(t, m.TrySend(2))
	require.False(t, m.TrySend(3))
	for i := range actors.ControlCapacity {
		require.True(t, m.TrySendControl(100+i))
	}
	require.False(t, m.TrySendControl(999))
	require.Equal(t, 2+actors.ControlCapacity, m.Len())

	gaveUp := errors.New("caller gave up")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(gaveUp)
	require.ErrorIs(t, m.Send(ctx, 3), gaveUp, "Send on a full lane returns the cause")
	require.ErrorIs(t, m.SendControl(ctx, 999), gaveUp)

	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	require.ErrorIs(t, m.Send(short, 3), context.DeadlineExceeded)
	require.Equal(t, 2+actors.ControlCapacity, m.Len(), "nothing was added")
}

func TestMailboxCapacityBelowOneIsOne(t *testing.T) {
	t.Parallel()
	for _, c := range []int{0, -5} {
		m := actors.NewMailbox[int](c)
		require.True(t, m.TrySend(1))
		require.False(t, m.TrySend(2))
	}
}

func TestMailboxBlockedSendProceedsWhenRoomOpens(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[int](1)
	require.True(t, m.TrySend(1))
	for i := range actors.ControlCapacity {
		require.True(t, m.TrySendControl(-i))
	}
	sent := make(chan error, 2)
	go func() { sent <- m.Send(context.Background(), 2) }()
	go func() { sent <- m.SendControl(context.Background(), -100) }()

	// Receiving a control message makes room for the control sender; the
	// data sender must not take its turn and lose it.
	require.Equal(t, []int{0}, receiveN(t, m, 1))
	require.Eventually(t, func() bool { return m.Len() == 1+actors.ControlCapacity }, waitTimeout, time.Millisecond,
		"the blocked control sender filled the freed slot")
	require.NoError(t, recv(t, sent))
	got := receiveN(t, m, actors.ControlCapacity)
	require.Equal(t, -100, got[len(got)-1])
	require.Equal(t, []int{1, 2}, receiveN(t, m, 2), "receiving data unblocks the data sender")
	require.NoError(t, recv(t, sent))
}

func TestMailboxReceiveReturnsCause(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[int](1)
	stopped := errors.New("stopped")
	ctx, cancel := context.WithCancelCause(context.Background())
	got := make(chan error, 1)
	go func() {
		_, err := m.Receive(ctx)
		got <- err
	}()
	cancel(stopped)
	require.ErrorIs(t, recv(t, got), stopped)
}

// TestMailboxManyBlockedSenders has many senders on both lanes of a tiny
// mailbox: every message arrives once, in order per sender, and control
// messages never wait behind data that was queued before them.
func TestMailboxManyBlockedSenders(t *testing.T) {
	t.Parallel()
	const senders, each = 16, 200
	type msg struct {
		sender, seq int
		control     bool
	}
	m := actors.NewMailbox[msg](1)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for s := range senders {
		control := s%2 == 0
		wg.Go(func() {
			for i := range each {
				var err error
				if control {
					err = m.SendControl(ctx, msg{s, i, true})
				} else {
					err = m.Send(ctx, msg{s, i, false})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	next := make([]int, senders)
	for range senders * each {
		v, err := m.Receive(ctx)
		require.NoError(t, err)
		require.Equal(t, next[v.sender], v.seq, "sender %d out of order", v.sender)
		next[v.sender]++
	}
	wg.Wait()
	for s := range senders {
		require.Equal(t, each, next[s])
	}
	require.Zero(t, m.Len())
}

// TestMailboxReadyInSelect drives a mailbox from a select beside a waker
// and a context, taking one message per wake-up: Ready keeps yielding while
// messages remain.
func TestMailboxReadyInSelect(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[int](8)
	w := actors.NewWaker()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		msgs  []int
		wakes int
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for {
			select {
			case <-ctx.Done():
				done <- r
				return
			case <-w.C():
				r.wakes++
			case <-m.Ready():
				if v, ok := m.TryReceive(); ok {
					r.msgs = append(r.msgs, v)
					if len(r.msgs) == 1000 {
						done <- r
						return
					}
				}
			}
		}
	}()
	for i := range 1000 {
		require.NoError(t, m.Send(ctx, i))
		if i%100 == 0 {
			w.Wake()
		}
	}
	r := recv(t, done)
	require.Len(t, r.msgs, 1000)
	for i, v := range r.msgs {
		require.Equal(t, i, v)
	}
}

func TestMailboxReadyYieldsOnSend(t *testing.T) {
	t.Parallel()
	m := actors.NewMailbox[string](2)
	select {
	case <-m.Ready():
		t.Fatal("an empty new mailbox is ready")
	default:
	}
	go func() { _ = m.Send(context.Background(), "hello") }()
	recv(t, m.Ready())
	v, ok := m.TryReceive()
	require.True(t, ok)
	require.Equal(t, "hello", v)
	select {
	case <-m.Ready():
		t.Fatal("Ready yields after the last message was taken")
	default:
	}
}

func TestMailboxConcurrentReceivers(t *testing.T) {
	t.Parallel()
	const n = 5000
	m := actors.NewMailbox[int](16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan int, n)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				v, err := m.Receive(ctx)
				if err != nil {
					return
				}
				got <- v
			}
		})
	}
	for i := range n {
		require.NoError(t, m.Send(ctx, i))
	}
	seen := make(map[int]bool, n)
	for range n {
		v := recv(t, got)
		require.False(t, seen[v], "message %d received twice", v)
		seen[v] = true
	}
	cancel()
	wg.Wait()
}

func BenchmarkMailbox(b *testing.B) {
	ctx := context.Background()
	b.Run("SendReceive", func(b *testing.B) {
		m := actors.NewMailbox[int](1024)
		b.ReportAllocs()
		for b.Loop() {
			_ = m.Send(ctx, 1)
			_, _ = m.Receive(ctx)
		}
	})
	b.Run("TrySendTryReceive", func(b *testing.B) {
		m := actors.NewMailbox[int](1024)
		b.ReportAllocs()
		for b.Loop() {
			m.TrySend(1)
			m.TryReceive()
		}
	})
	for _, producers := range []int{1, 4} {
		b.Run(fmt.Sprint("ProducersConsumer/", producers), func(b *testing.B) {
			m := actors.NewMailbox[int](1024)
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N / producers
			for range producers {
				wg.Go(func() {
					for i := range per {
						_ = m.Send(ctx, i)
					}
				})
			}
			for range per * producers {
				_, _ = m.Receive(ctx)
			}
			wg.Wait()
		})
	}
}
