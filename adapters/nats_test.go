package adapters_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/adapters/adaptertest"
)

// nats:// provisions a stream for a dotted topic and sets Nats-Msg-Id, so
// JetStream drops a redelivery of the same message UUID.
func TestNATSDeduplicatesByMessageUUIDAndAcceptsDottedTopics(t *testing.T) {
	t.Parallel()
	adaptertest.Require(t, "127.0.0.1:4222")
	topic := "orders." + adaptertest.Topic("dedup")
	pub, err := adapters.NewPublisher(context.Background(), adapters.Config{URL: adaptertest.NATSURL})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	for range 3 { // the same message published three times, as after relay crashes
		require.NoError(t, pub.Publish(topic, message.NewMessage("same-uuid-1", []byte("x"))))
	}
	require.NoError(t, pub.Publish(topic, message.NewMessage("other-uuid-2", []byte("y"))))

	nc, err := nats.Connect(adaptertest.NATSURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := nc.JetStream()
	require.NoError(t, err)
	name := adapters.NATSStreamName(topic)
	t.Cleanup(func() { _ = js.DeleteStream(name) })
	info, err := js.StreamInfo(name)
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.State.Msgs)
	require.Equal(t, []string{topic}, info.Config.Subjects)
}
