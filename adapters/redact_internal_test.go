package adapters

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
)

func TestRedactingLoggerHidesPasswords(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := redactingLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	l = l.With("url", "amqp://guest:pw-attr-1@h/").WithGroup("g")
	l.Info("dial amqp://u:pw-msg-2@h:5672/ failed",
		"err", errors.New("connect postgres://u:pw-err-3@h/db"),
		slog.Group("conn", "dsn", "host=h password=pw-group-4"),
		"n", 7)
	// Through Watermill's slog bridge, as the broker libraries log.
	watermill.NewSlogLogger(l).Error("reconnect", errors.New("redis://:pw-wm-5@h:6379/0"), watermill.LogFields{"uri": "nats://a:pw-wm-6@h"})
	out := buf.String()
	for _, pw := range []string{"pw-attr-1", "pw-msg-2", "pw-err-3", "pw-group-4", "pw-wm-5", "pw-wm-6"} {
		require.NotContains(t, out, pw)
	}
	require.Contains(t, out, "amqp://u:xxxxx@h:5672/")
	require.Contains(t, out, "n=7")
	require.False(t, redactingLogger(nil).Enabled(t.Context(), slog.LevelError), "nil logs nothing")
}

func TestKafkaMarshalerKey(t *testing.T) {
	t.Parallel()
	m := message.NewMessage("uuid-1", []byte("p"))
	m.Metadata.Set(engine.MetadataKey, "order-42")
	km, err := KafkaMarshaler().Marshal("t", m)
	require.NoError(t, err)
	k, err := km.Key.Encode()
	require.NoError(t, err)
	require.Equal(t, "order-42", string(k))

	km, err = KafkaMarshaler().Marshal("t", message.NewMessage("uuid-2", []byte("p")))
	require.NoError(t, err)
	require.Nil(t, km.Key, "a keyless message gets a nil key (spread over partitions)")

	v, err := km.Value.Encode()
	require.NoError(t, err)
	back, err := KafkaMarshaler().Unmarshal(&sarama.ConsumerMessage{Value: v, Headers: headers(km.Headers)})
	require.NoError(t, err)
	require.Equal(t, "uuid-2", back.UUID)
}

func headers(hs []sarama.RecordHeader) []*sarama.RecordHeader {
	out := make([]*sarama.RecordHeader, len(hs))
	for i := range hs {
		out[i] = &hs[i]
	}
	return out
}
