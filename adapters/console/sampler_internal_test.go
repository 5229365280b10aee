package console

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Rates between two counter samples: deliveries are deletes minus the
// dead-letter inserts; a counter that went down (statistics reset) gives
// no point.
func TestConsoleRates(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	at := func(s float64, del, upd, dead, live int64) sample {
		return sample{at: t0.Add(time.Duration(s * float64(time.Second))), c: counters{del, upd, dead, live}}
	}
	for _, tc := range []struct {
		name string
		a, b sample
		want Point
		ok   bool
	}{
		{"deliveries and failures", at(0, 100, 10, 0, 50), at(2, 300, 14, 0, 40),
			Point{DeliveredPerS: 100, FailuresPerS: 2, Backlog: 40, Seconds: 2}, true},
		{"dead letters are not deliveries", at(0, 0, 0, 0, 0), at(5, 50, 0, 10, 0),
			Point{DeliveredPerS: 8, DeadLetteredPerS: 2, Seconds: 5}, true},
		{"statistics reset", at(0, 500, 0, 0, 0), at(5, 20, 0, 0, 0), Point{}, false},
		{"no time passed", at(1, 0, 0, 0, 0), at(1, 5, 0, 0, 0), Point{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := rate(tc.a, tc.b)
			require.Equal(t, tc.ok, ok)
			if ok {
				tc.want.At = tc.b.at
				require.Equal(t, tc.want, got)
			}
		})
	}
}

// The ring keeps the last hour of samples, oldest first, and the current
// rates cover up to the last minute.
func TestConsoleSamplerRing(t *testing.T) {
	t.Parallel()
	var n int64
	s := newSampler(time.Minute, func(context.Context) (counters, error) {
		n += 60
		return counters{recordsDeleted: n}, nil
	})
	for i := range 70 {
		s.mu.Lock()
		s.ring[s.next] = sample{at: time.Unix(int64(i*60), 0), c: counters{recordsDeleted: int64(i * 60)}}
		s.next = (s.next + 1) % len(s.ring)
		s.n = min(s.n+1, len(s.ring))
		s.mu.Unlock()
	}
	ss := s.samples()
	require.Len(t, ss, 61, "an hour of one-minute samples and the one before")
	require.Equal(t, time.Unix(9*60, 0), ss[0].at)
	require.Equal(t, time.Unix(69*60, 0), ss[60].at)
	h := s.history()
	require.Len(t, h, 60)
	for _, p := range h {
		require.InDelta(t, 1.0, p.DeliveredPerS, 1e-9)
	}
	p, window, ok := s.current()
	require.True(t, ok)
	require.Equal(t, 60.0, window)
	require.InDelta(t, 1.0, p.DeliveredPerS, 1e-9)
	// A sample is taken only when the last is an interval old.
	require.NoError(t, s.sampleIfDue(context.Background()))
	require.Len(t, s.samples(), 61)
	require.Equal(t, int64(60), s.samples()[60].c.recordsDeleted, "a new sample after the old ones")
}
