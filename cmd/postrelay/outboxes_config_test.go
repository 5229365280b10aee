package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A relay config file listing outboxes is recognized, and each bad entry
// gets an error naming it; a broker config file is left to its loader.
func TestManyOutboxesConfigFile(t *testing.T) {
	t.Parallel()
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "relay.yaml")
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	f, ok, err := loadOutboxesFile(write("delivery_conns_total: 4\noutboxes:\n" +
		"  - {schema: a, database_url: 'postgres://u@h/db', broker: 'memory://'}\n" +
		"  - {schema: b, database_url: 'postgres://u@h/db', broker: 'nats://127.0.0.1:4222', pooler: transaction}\n"))
	require.NoError(t, err)
	require.True(t, ok)
	require.Len(t, f.Outboxes, 2)
	require.Equal(t, "transaction", f.Outboxes[1].Pooler)

	_, ok, err = loadOutboxesFile(write("url: memory://\n"))
	require.NoError(t, err)
	require.False(t, ok, "a broker config file")

	for body, want := range map[string]string{
		"outboxes: []\n": "outboxes is empty",
		"outboxes:\n  - {schema: a, broker: 'memory://'}\n":                                                                                                                                      "outboxes[0].database_url is empty",
		"outboxes:\n  - {database_url: 'postgres://u@h/db', broker: 'memory://'}\n":                                                                                                              "outboxes[0].schema is empty",
		"outboxes:\n  - {schema: a, database_url: 'postgres://u@h/db'}\n":                                                                                                                        "outboxes[0].broker is empty",
		"outboxes:\n  - {schema: a, database_url: 'postgres://u:pw@h/db', broker: 'smtp://x'}\n":                                                                                                 `unknown broker scheme`,
		"outboxes:\n  - {schema: a, database_url: 'postgres://u@h/db', broker: 'memory://'}\n  - {schema: a, database_url: 'postgres://u@h/db', broker: 'memory://'}\n":                          `schema "a" of postgres://u@h/db is listed twice`,
		"delivery_conns_total: 1\noutboxes:\n  - {schema: a, database_url: 'postgres://u@h/db', broker: 'memory://'}\n  - {schema: b, database_url: 'postgres://u@h/db', broker: 'memory://'}\n": "delivery_conns_total = 1: must be at least one per outbox (2)",
		"outboxes:\n  - {schema: a, database_url: 'postgres://u@h/db', broker: 'memory://', typo: 1}\n":                                                                                          "field typo not found",
	} {
		_, ok, err := loadOutboxesFile(write(body))
		require.True(t, ok, body)
		require.ErrorContains(t, err, want, body)
	}
	require.Equal(t, []int{2, 2, 1}, deliveryShares(5, 3))
	require.Equal(t, []int{1, 1}, deliveryShares(2, 2))
}
