package adapters

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/require"
)

func TestWatermillLoggerSkipsDisabledLevelsWithoutWork(t *testing.T) {
	var buf bytes.Buffer
	l := newWatermillLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	fields := watermill.LogFields{"message_uuid": "0b7c", "topic": "orders"}

	l.Trace("sending", fields)
	l.Debug("sent", fields)
	require.Empty(t, buf.String(), "Trace and Debug are below the handler's level")
	// The point of the adapter: a dropped call converts nothing.
	require.Zero(t, testing.AllocsPerRun(100, func() { l.Debug("sent", fields) }))

	l.Info("no subscribers", watermill.LogFields{"topic": "orders", "b": 2, "a": "x"})
	require.Contains(t, buf.String(), `level=INFO msg="no subscribers" a=x b=2 topic=orders`)
	buf.Reset()

	l.Error("publish failed", errors.New("boom"), fields)
	require.Contains(t, buf.String(), `level=ERROR msg="publish failed" message_uuid=0b7c topic=orders error=boom`)
	buf.Reset()

	l.With(watermill.LogFields{"component": "amqp"}).Info("connected", nil)
	require.Contains(t, buf.String(), `msg=connected component=amqp`)
}

func TestWatermillLoggerTraceLevel(t *testing.T) {
	var buf bytes.Buffer
	l := newWatermillLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: watermill.LevelTrace})))
	l.Trace("sending", watermill.LogFields{"topic": "orders"})
	require.Contains(t, buf.String(), `level=DEBUG-4 msg=sending topic=orders`)

	// nil discards.
	newWatermillLogger(nil).Error("dropped", errors.New("boom"), nil)
}
