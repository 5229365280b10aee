package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestMultiInstance(t *testing.T) {
	_, schema := pgtest.FreshSchema(t)
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, schema))
	require.Contains(t, out.String(), "partitions: relay-a=4 relay-b=4 relay-c=4")
	require.Contains(t, out.String(), "partitions: relay-a=6 relay-c=6")
	require.Contains(t, out.String(), "relay-b's partitions moved in")
}
