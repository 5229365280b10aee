package actors_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/actors"
)

func pending(w *actors.Waker) bool {
	select {
	case <-w.C():
		return true
	default:
		return false
	}
}

func TestWakerCoalesces(t *testing.T) {
	t.Parallel()
	w := actors.NewWaker()
	require.False(t, pending(w), "a new waker has no wake-up")
	for range 1000 {
		w.Wake()
	}
	require.True(t, pending(w))
	require.False(t, pending(w), "1000 wake-ups coalesce into one")
	w.Wake()
	require.True(t, pending(w), "a wake-up after a receive is kept")
}

func TestWakerConcurrentWakes(t *testing.T) {
	t.Parallel()
	w := actors.NewWaker()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				w.Wake()
			}
		})
	}
	wg.Wait()
	require.True(t, pending(w))
	require.False(t, pending(w))
}

// TestWakerNeverLosesTheLastWake has a consumer that, once woken, reads the
// shared counter: whatever the interleaving, it ends up seeing the last
// value, because a Wake after a receive is never lost.
func TestWakerNeverLosesTheLastWake(t *testing.T) {
	t.Parallel()
	const n = 10000
	w := actors.NewWaker()
	var mu sync.Mutex
	counter := 0
	seen := make(chan int)
	go func() {
		for {
			<-w.C()
			mu.Lock()
			c := counter
			mu.Unlock()
			if c == n {
				seen <- c
				return
			}
		}
	}()
	for range n {
		mu.Lock()
		counter++
		mu.Unlock()
		w.Wake()
	}
	require.Equal(t, n, recv(t, seen))
}

func BenchmarkWaker(b *testing.B) {
	b.Run("WakeReceive", func(b *testing.B) {
		w := actors.NewWaker()
		b.ReportAllocs()
		for b.Loop() {
			w.Wake()
			<-w.C()
		}
	})
	b.Run("WakeCoalesced", func(b *testing.B) {
		w := actors.NewWaker()
		w.Wake()
		b.ReportAllocs()
		for b.Loop() {
			w.Wake()
		}
	})
	b.Run("WakeParallel", func(b *testing.B) {
		w := actors.NewWaker()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				w.Wake()
			}
		})
	})
}
