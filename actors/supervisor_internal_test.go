package actors

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDecay(t *testing.T) {
	t.Parallel()
	const h = time.Minute
	for _, tc := range []struct {
		name    string
		f       float64
		elapsed time.Duration
		want    float64
	}{
		{"zero stays zero", 0, h, 0},
		{"no time, no decay", 7, 0, 7},
		{"clock went back, no decay", 7, -h, 7},
		{"one half-life halves", 8, h, 4},
		{"two half-lives quarter", 8, 2 * h, 2},
		{"half a half-life", 2, h / 2, math.Sqrt2},
		{"long quiet spell", 1000, 100 * h, 1000 * math.Exp2(-100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.InDelta(t, tc.want, decay(tc.f, tc.elapsed, h), 1e-12)
		})
	}
}

func TestRestartDelay(t *testing.T) {
	t.Parallel()
	const ms = time.Millisecond
	for _, tc := range []struct {
		name              string
		initial, maxDelay time.Duration
		failures          float64
		want              time.Duration
	}{
		{"below one counts as one", 50 * ms, 10 * time.Second, 0.3, 50 * ms},
		{"first failure", 50 * ms, 10 * time.Second, 1, 50 * ms},
		{"rounds down", 50 * ms, 10 * time.Second, 1.49, 50 * ms},
		{"rounds up", 50 * ms, 10 * time.Second, 1.5, 100 * ms},
		{"doubles", 50 * ms, 10 * time.Second, 4, 400 * ms},
		{"capped", 50 * ms, 10 * time.Second, 9, 10 * time.Second},
		{"huge count stays capped", 50 * ms, 10 * time.Second, 1e12, 10 * time.Second},
		{"initial equals max", ms, ms, 50, ms},
		{"huge max", time.Nanosecond, math.MaxInt64, 100, math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, restartDelay(tc.initial, tc.maxDelay, tc.failures, 0))
		})
	}
}

func TestRestartDelayJitter(t *testing.T) {
	t.Parallel()
	const initial, maxDelay = 100 * time.Millisecond, time.Second
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := restartDelay(initial, maxDelay, 2, restartJitter)
		require.GreaterOrEqual(t, d, 160*time.Millisecond)
		require.LessOrEqual(t, d, 240*time.Millisecond+1)
		seen[d] = true

		capped := restartDelay(initial, maxDelay, 10, restartJitter)
		require.GreaterOrEqual(t, capped, 800*time.Millisecond)
		require.LessOrEqual(t, capped, maxDelay, "jitter never exceeds MaxBackoff")
	}
	require.Greater(t, len(seen), 100, "delays are spread")
}

func TestRing(t *testing.T) {
	t.Parallel()
	r := newRing[int](3)
	next, want := 0, 0
	for round := range 10 {
		for !r.full() {
			require.True(t, r.push(next))
			next++
		}
		require.False(t, r.push(-1))
		for range round%3 + 1 {
			v, ok := r.pop()
			require.True(t, ok)
			require.Equal(t, want, v)
			want++
		}
	}
	for r.len() > 0 {
		v, _ := r.pop()
		require.Equal(t, want, v)
		want++
	}
	_, ok := r.pop()
	require.False(t, ok)
	require.Equal(t, next, want)
	for _, v := range r.buf {
		require.Zero(t, v, "popped slots are cleared")
	}
}
