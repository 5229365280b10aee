package engine

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The parallel-publish decision follows the fastest call of each batch, so
// a broker answering in microseconds is seen as fast even when scheduling
// made most calls of the batch slow, and a slow broker stays slow.
func TestPublishEstimate(t *testing.T) {
	t.Parallel()
	us := time.Microsecond
	tests := []struct {
		name    string
		prev    time.Duration
		batches []time.Duration // fastest call of each batch
		fast    bool            // below parallelPublishThreshold at the end
	}{
		{"in-process broker leaves the parallel path after one batch", parallelPublishThreshold, []time.Duration{5 * us}, true},
		{"nothing measured keeps the estimate", parallelPublishThreshold, []time.Duration{0}, false},
		{"network broker stays parallel", parallelPublishThreshold, []time.Duration{900 * us, 1100 * us, 950 * us}, false},
		{"broker slowing down turns parallel", 10 * us, []time.Duration{5000 * us, 5000 * us}, false},
		{"one slow batch does not flip a fast broker", 10 * us, []time.Duration{400 * us}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.prev
			for _, f := range tt.batches {
				got = publishEstimate(got, f)
			}
			require.Equal(t, tt.fast, got < parallelPublishThreshold, "estimate %v", got)
		})
	}
}

// The estimate takes the batch's fastest publish, not its mean.
func TestObservePublishTimesUsesFastestCall(t *testing.T) {
	t.Parallel()
	s := newPartitionState(1)
	s.apply(Event{Kind: EventBatchFetched, Count: 4})
	for _, d := range []time.Duration{3 * time.Millisecond, 4 * time.Microsecond, 2 * time.Millisecond, 0} {
		s.apply(Event{Kind: EventDelivered, Duration: d})
	}
	s.apply(Event{Kind: eventBatchCompleted})
	require.Equal(t, (parallelPublishThreshold*3+4*time.Microsecond)/4, s.publishEstimate)
}
