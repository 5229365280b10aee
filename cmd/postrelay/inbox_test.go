package main

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/inbox"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// `postrelay inbox migrate|purge`: migrate is idempotent, purge deletes
// only expired ids of registered consumers; a missing migration, an
// unknown consumer and bad flags are named.
func TestInboxCLI(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	cli := func(args ...string) (string, int) {
		out, err := exec.Command(binary, append(args, "--database-url", pgtest.URL(), "--inbox-schema", schema)...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		require.NoError(t, err, string(out))
		return string(out), 0
	}
	out, code := cli("inbox", "purge")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, schema+".consumers does not exist")
	require.Contains(t, out, "postrelay inbox migrate --schema "+schema)

	for range 2 {
		out, code = cli("inbox", "migrate")
		require.Zero(t, code, out)
		require.Contains(t, out, `inbox schema "`+schema+`" migrated to version 1`)
	}
	out, code = cli("inbox", "migrate", "--print")
	require.Zero(t, code, out)
	require.Contains(t, out, `CREATE TABLE "`+schema+`".processed`)

	ctx := context.Background()
	_, err := inbox.New(ctx, pool, inbox.Config{Consumer: "billing", Schema: schema, Retention: time.Hour})
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "processed"}.Sanitize()+" (consumer, message_id, processed_at) "+
		"SELECT 'billing', 'm'||i, now() - i * interval '1 minute' FROM generate_series(1, 90) i")
	require.NoError(t, err)

	out, code = cli("inbox", "purge", "--consumer", "shipping")
	require.Equal(t, 2, code, out)
	require.Contains(t, out, `unknown consumer: "shipping" is not registered in schema "`+schema+`" (registered: ["billing"])`)

	out, code = cli("inbox", "purge") // billing's own retention: 1h
	require.Zero(t, code, out)
	require.Contains(t, out, `consumer "billing": purged 31 message ids`) // 60..90 minutes old
	out, code = cli("inbox", "purge", "--consumer", "billing", "--retention", "30m30s")
	require.Zero(t, code, out)
	require.Contains(t, out, `consumer "billing": purged 29 message ids`)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inbox"}, "usage: postrelay inbox migrate|purge"},
		{[]string{"inbox", "purge", "--retention", "5ms"}, "--retention 5ms: must be at least 1s"},
		{[]string{"inbox", "purge", "--batch", "0"}, "--batch 0: must be at least 1"},
	} {
		out, code := cli(tc.args...)
		require.Equal(t, 2, code, out)
		require.Contains(t, out, tc.want)
	}
	out, err = func() (string, error) {
		b, err := exec.Command(binary, "inbox", "migrate", "--inbox-schema", "Bad-Name").CombinedOutput()
		return string(b), err
	}()
	require.Error(t, err)
	require.Contains(t, out, `Schema = "Bad-Name"`)
}
