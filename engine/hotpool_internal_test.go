package engine

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// The delivery pool reuses the user's connection settings, is bounded to
// hotConns connections, and its sessions plan the delivery statements
// generically and commit without waiting for the WAL flush; the user's pool
// is left as it was.
func TestHotPoolUsesGenericPlansAndIsBounded(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	hot, err := openHotPool(ctx, pool)
	require.NoError(t, err)
	defer hot.Close()
	require.Equal(t, int32(hotConns), hot.Config().MaxConns)
	var mode string
	require.NoError(t, hot.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&mode))
	require.Equal(t, "force_generic_plan", mode)
	require.NoError(t, pool.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&mode))
	require.Equal(t, "auto", mode, "the user's sessions are not changed")
	var sync string
	require.NoError(t, hot.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sync))
	require.Equal(t, "off", sync)
	require.NoError(t, pool.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sync))
	require.Equal(t, "on", sync, "the user's commits stay synchronous")
	var user string
	require.NoError(t, hot.QueryRow(ctx, "SELECT current_user").Scan(&user))
	var want string
	require.NoError(t, pool.QueryRow(ctx, "SELECT current_user").Scan(&want))
	require.Equal(t, want, user)
}
