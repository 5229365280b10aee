package main

import (
	"bytes"
	"context"
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
			require.NoError(t, run(context.Background(), &out, url, schema, 10, time.Minute))
			require.Contains(t, out.String(), "relayed 10 records")
			require.NotContains(t, out.String(), "guest:guest")
		})
	}
}

// When the broker refuses every message the example says why within its
// deadline. Here another client of the NATS server already owns the stream
// name postrelay would create for the topic (with other subjects).
func TestBrokersExampleSaysWhyNothingWasDelivered(t *testing.T) {
	adaptertest.Require(t, "127.0.0.1:4222")
	nc, err := nats.Connect(adaptertest.NATSURL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := nc.JetStream()
	require.NoError(t, err)
	name := adapters.NATSStreamName("examples.brokers")
	_ = js.DeleteStream(name) // left by TestBrokersExample (not parallel)
	_, err = js.AddStream(&nats.StreamConfig{Name: name, Subjects: []string{"examples.other." + pgtest.NewSchemaName()}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = js.DeleteStream(name) })

	_, schema := pgtest.FreshSchema(t)
	err = run(context.Background(), io.Discard, adaptertest.NATSURL, schema, 3, 3*time.Second)
	require.ErrorContains(t, err, "0 of 3 delivered within 3s")
	require.ErrorContains(t, err, `create JetStream stream "examples_brokers" for topic "examples.brokers"`)
	t.Log(err)
}
