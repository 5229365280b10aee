package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestRouterExample(t *testing.T) {
	pool, schema := pgtest.FreshSchema(t)
	topic := adaptertest.Topic("router_in")
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_" + topic}.Sanitize())
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_offsets_" + topic}.Sanitize())
	})
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, schema, topic))
	for _, id := range []string{"order-1", "order-2", "order-3"} {
		require.Contains(t, out.String(), "broker received: "+id+" confirmed")
	}
}
