package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

// The least-privilege roles the README documents are enough: a writer role
// with INSERT on records and SELECT on meta, and a relay role with SELECT,
// INSERT, UPDATE, DELETE on the schema's tables — neither owns anything.
func TestLeastPrivilegeRoles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	schema := pgx.Identifier{b.cfg.Schema}.Sanitize()
	relayRole, writerRole := b.cfg.Schema+"_relay", b.cfg.Schema+"_writer"
	for _, stmt := range []string{
		"CREATE ROLE " + relayRole + " LOGIN",
		"CREATE ROLE " + writerRole + " LOGIN",
		"GRANT USAGE ON SCHEMA " + schema + " TO " + relayRole + ", " + writerRole,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA " + schema + " TO " + relayRole,
		"GRANT INSERT ON " + schema + ".records TO " + writerRole,
		"GRANT SELECT ON " + schema + ".meta TO " + writerRole,
	} {
		_, err := b.pool.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	t.Cleanup(func() {
		for _, r := range []string{relayRole, writerRole} {
			_, _ = b.pool.Exec(context.Background(), "DROP OWNED BY "+r)
			_, _ = b.pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+r)
		}
	})
	as := func(role string) *pgxpool.Pool {
		cfg, err := pgxpool.ParseConfig(pgtest.URL())
		require.NoError(t, err)
		cfg.ConnConfig.User = role
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		return pool
	}
	relayPool, writerPool := as(relayRole), as(writerRole)

	pub := recorder.New()
	eng, err := engine.New(relayPool, pub, b.cfg)
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	err = pgx.BeginFunc(ctx, writerPool, func(tx pgx.Tx) error {
		return engine.NewWriter(b.cfg).Write(ctx, tx, rec("t", "k", 1), rec("t", "k", 2))
	})
	require.NoError(t, err)
	require.NoError(t, pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool { return len(ds) == 2 }))

	// The writer role cannot read or delete records.
	_, err = writerPool.Exec(ctx, "DELETE FROM "+schema+".records")
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "permission denied"), fmt.Sprint(err))
}
