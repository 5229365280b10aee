package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestQuickstart(t *testing.T) {
	_, schema := pgtest.FreshSchema(t)
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, schema))
	require.Contains(t, out.String(), `key=order-1 {"id":"order-1","cents":4200}`)
	require.Contains(t, out.String(), `key=order-3 {"id":"order-3","cents":15000}`)
}
