package tracing_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/postrelay/postrelay/tracing"
)

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	c := tracing.Config{}.WithDefaults()
	require.Equal(t, otel.GetTracerProvider(), c.TracerProvider)
	require.Equal(t, otel.GetMeterProvider(), c.MeterProvider)
	require.ElementsMatch(t, []string{"traceparent", "tracestate", "baggage"}, c.Propagator.Fields())
	require.Equal(t, tracing.SystemDefault, c.System)
	require.Equal(t, tracing.StatsIntervalDefault, c.StatsInterval)
	require.Equal(t, tracing.StatsTimeoutDefault, c.StatsTimeout)
	require.NotNil(t, c.Logger)
	require.NoError(t, c.Validate())

	set := tracing.Config{System: "kafka", StatsInterval: time.Second, Propagator: propagation.TraceContext{}}.WithDefaults()
	require.Equal(t, "kafka", set.System)
	require.Equal(t, time.Second, set.StatsInterval)
	require.Equal(t, []string{"traceparent", "tracestate"}, set.Propagator.Fields())
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mod  func(*tracing.Config)
		want string // "" means valid
	}{
		{"defaults", func(*tracing.Config) {}, ""},
		{"nil tracer provider", func(c *tracing.Config) { c.TracerProvider = nil }, "TracerProvider = <nil>"},
		{"nil meter provider", func(c *tracing.Config) { c.MeterProvider = nil }, "MeterProvider = <nil>"},
		{"nil propagator", func(c *tracing.Config) { c.Propagator = nil }, "Propagator = <nil>"},
		{"empty system", func(c *tracing.Config) { c.System = "" }, `System = "": must be 1 to 64 bytes`},
		{"long system", func(c *tracing.Config) { c.System = string(make([]byte, 65)) }, "System = "},
		{"negative interval", func(c *tracing.Config) { c.StatsInterval = -time.Second }, "StatsInterval = -1s: must be positive"},
		{"zero timeout", func(c *tracing.Config) { c.StatsTimeout = 0 }, "StatsTimeout = 0s: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tracing.Config{}.WithDefaults()
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tracing.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := tracing.New(tracing.Config{StatsInterval: -1})
	require.ErrorIs(t, err, tracing.ErrInvalidConfig)
}
