package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestBrokersExample(t *testing.T) {
	for _, url := range []string{"memory://", pgtest.URL(), adaptertest.AMQPURL, adaptertest.NATSURL, adaptertest.RedisURL} {
		t.Run(url[:4], func(t *testing.T) {
			_, schema := pgtest.FreshSchema(t)
			var out bytes.Buffer
			require.NoError(t, run(context.Background(), &out, url, schema, 10))
			require.Contains(t, out.String(), "relayed 10 records")
			require.NotContains(t, out.String(), "guest:guest")
		})
	}
}
