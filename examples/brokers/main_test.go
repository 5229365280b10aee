package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"

	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestBrokersExample(t *testing.T) {
	for _, url := range []string{"memory://", pgtest.URL(), adaptertest.AMQPURL, adaptertest.NATSURL, adaptertest.RedisURL} {
		t.Run(url[:4], func(t *testing.T) {
			_, schema := pgtest.FreshSchema(t)
			var out bytes.Buffer
			require.NoError(t, run(context.Background(), &out, url, schema, "examples.brokers", 10, time.Minute))
			require.Contains(t, out.String(), "relayed 10 records")
			require.NotContains(t, out.String(), "guest:guest")
		})
	}
}

// When the broker refuses every message the example says why within its
// deadline. Here another client of the NATS server already owns the stream
// name postrelay would create for the topic (with other subjects). The
// topic is the test's own, so other runs on the shared server are not
// disturbed.
func TestBrokersExampleSaysWhyNothingWasDelivered(t *testing.T) {
	adaptertest.Require(t, "127.0.0.1:4222")
	nc, err := nats.Connect(adaptertest.NATSURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close) // after the stream's deletion (cleanups run last first)
	js, err := nc.JetStream()
	require.NoError(t, err)
	_, schema := pgtest.FreshSchema(t)
	topic := "examples.brokers." + schema
	name := adapters.NATSStreamName(topic)
	_, err = js.AddStream(&nats.StreamConfig{Name: name, Subjects: []string{"examples.other." + schema}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, js.DeleteStream(name)) })

	err = run(context.Background(), io.Discard, adaptertest.NATSURL, schema, topic, 3, 5*time.Second)
	require.ErrorContains(t, err, "0 of 3 delivered within 5s")
	require.ErrorContains(t, err, fmt.Sprintf("create JetStream stream %q for topic %q", name, topic))
	require.ErrorContains(t, err, "stream name already in use")
	t.Log(err)
}
