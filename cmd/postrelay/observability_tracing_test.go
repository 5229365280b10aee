package main

import (
	"context"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"

	"github.com/postrelay/postrelay/engine"
)

// --tracing alone records a span per attempt (the message carries its
// traceparent), and shutdown stops the span processor (TestMain's goleak
// checks its goroutine is gone).
func TestTracingFlagRecordsSpans(t *testing.T) { // not parallel: setup sets the global providers
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
	})
	var cfg engine.Config
	shutdown, err := (&observability{tracing: true}).setup(context.Background(), &cfg, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer shutdown()
	require.NotNil(t, cfg.Observer)

	msg := message.NewMessage("m-1", []byte("x"))
	msg.Metadata = message.Metadata{}
	_, finish := cfg.Observer.StartAttempt(context.Background(),
		engine.Attempt{Topic: "orders", MessageID: "m-1", Attempt: 1, Metadata: msg.Metadata}, msg)
	finish.FinishAttempt(engine.AttemptResult{Outcome: engine.OutcomeDelivered})
	require.Len(t, msg.Metadata["traceparent"], 55, "the attempt's span was recorded")
}
