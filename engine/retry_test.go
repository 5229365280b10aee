package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
)

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	cfg := engine.Config{RetryInitial: 100 * time.Millisecond, RetryMax: time.Second, RetryJitter: engine.NoJitter}
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{
		{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond}, {5, time.Second}, {50, time.Second},
	} {
		require.Equal(t, tc.want, cfg.RetryDelay(tc.attempt, 0.5), "attempt %d", tc.attempt)
	}
	jit := engine.Config{RetryInitial: time.Second, RetryMax: time.Minute, RetryJitter: 0.2}
	require.Equal(t, 800*time.Millisecond, jit.RetryDelay(1, 0))
	require.Equal(t, time.Second, jit.RetryDelay(1, 0.5))
	require.InDelta(t, float64(1200*time.Millisecond), float64(jit.RetryDelay(1, 0.999999)), float64(time.Millisecond))
}

func TestConfigValidateNamesField(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   engine.Config
		field string
	}{
		{"schema injection", engine.Config{Schema: `x"; DROP TABLE y; --`}, "Schema"},
		{"schema upper", engine.Config{Schema: "Outbox"}, "Schema"},
		{"schema long", engine.Config{Schema: "s234567890123456789012345678901234567890123456789012"}, "Schema"},
		{"partitions high", engine.Config{Partitions: 1025}, "Partitions"},
		{"partitions negative", engine.Config{Partitions: -1}, "Partitions"},
		{"batch", engine.Config{BatchSize: 100000}, "BatchSize"},
		{"lease ttl", engine.Config{HeartbeatInterval: time.Second, LeaseTTL: 2 * time.Second}, "LeaseTTL"},
		{"retry max", engine.Config{RetryInitial: time.Minute, RetryMax: time.Second}, "RetryMax"},
		{"jitter", engine.Config{RetryJitter: 1.5}, "RetryJitter"},
		{"in flight", engine.Config{MaxInFlight: -2}, "MaxInFlight"},
		{"publish concurrency", engine.Config{PublishConcurrency: 1000}, "PublishConcurrency"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.WithDefaults().Validate()
			require.ErrorIs(t, err, engine.ErrInvalidConfig)
			require.Contains(t, err.Error(), tc.field+" = ")
		})
	}
	require.NoError(t, engine.Config{}.WithDefaults().Validate())
}
