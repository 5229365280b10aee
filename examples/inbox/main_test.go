package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, pgtest.LeakOptions...)
}

// The demo publishes four orders twice each: each is applied once, in
// per-key order, with one follow-up record in the outbox.
func TestInboxExample(t *testing.T) {
	pool, inboxSchema := pgtest.FreshSchema(t)
	outboxSchema := pgtest.NewSchemaName()
	pgtest.DropSchemaOnCleanup(t, pool, outboxSchema)
	var out, logs bytes.Buffer
	err := run(context.Background(), []string{"--database-url", pgtest.URL(), "--inbox-schema", inboxSchema,
		"--outbox-schema", outboxSchema, "--topic", "orders_" + inboxSchema}, &out, &logs)
	require.NoError(t, err, "logs:\n%s", logs.String())
	require.Equal(t, `applied 1 (key 1, order 1)
applied 2 (key 0, order 1)
applied 3 (key 1, order 2)
applied 4 (key 0, order 2)
deliveries: 8, applied: 4, duplicates suppressed: 4
follow-up records in the outbox: 4
`, out.String())
}
