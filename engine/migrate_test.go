package engine_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestMigrateConcurrentlyIsSafeAndIdempotent(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	cfg := engine.Config{Schema: schema, Partitions: 32}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = engine.Migrate(context.Background(), pool, cfg) })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "migrator %d", i)
	}
	require.NoError(t, engine.Migrate(context.Background(), pool, cfg))
	var versions, partitions int
	require.NoError(t, pool.QueryRow(context.Background(),
		"SELECT count(*) FROM "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&versions))
	require.Equal(t, len(engine.Migrations()), versions)
	require.NoError(t, pool.QueryRow(context.Background(),
		"SELECT count(*) FROM "+pgx.Identifier{schema, "partitions"}.Sanitize()).Scan(&partitions))
	require.Equal(t, 32, partitions)
}

func TestMigrateRefusesOtherPartitionCountAndNewerSchema(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	require.NoError(t, engine.Migrate(ctx, pool, engine.Config{Schema: schema, Partitions: 8}))

	err := engine.Migrate(ctx, pool, engine.Config{Schema: schema, Partitions: 64})
	require.ErrorIs(t, err, engine.ErrPartitionsMismatch)
	require.ErrorContains(t, err, "has 8 partitions, config asks for 64")

	_, err = pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+" (version, name) VALUES (999, 'future')")
	require.NoError(t, err)
	err = engine.Migrate(ctx, pool, engine.Config{Schema: schema, Partitions: 8})
	require.ErrorIs(t, err, engine.ErrSchemaTooNew)
	require.ErrorContains(t, err, "version 999")

	eng, err := engine.New(pool, nopPublisher{}, engine.Config{Schema: schema})
	require.NoError(t, err)
	require.ErrorIs(t, eng.Run(ctx), engine.ErrSchemaTooNew)
}

func TestMigrateRejectsBadConfig(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	for _, tc := range []struct {
		cfg  engine.Config
		want string
	}{
		{engine.Config{Schema: "bad-name"}, `Schema = "bad-name"`},
		{engine.Config{Schema: "x; drop"}, `Schema = "x; drop"`},
		{engine.Config{Partitions: 2000}, "Partitions = 2000"},
		{engine.Config{Partitions: -3}, "Partitions = -3"},
	} {
		err := engine.Migrate(context.Background(), pool, tc.cfg)
		require.ErrorIs(t, err, engine.ErrInvalidConfig)
		require.ErrorContains(t, err, tc.want)
	}
}

func TestRenderedMigrationsUseTheSchema(t *testing.T) {
	t.Parallel()
	for _, m := range engine.Migrations() {
		sql := m.Render(engine.Config{Schema: "custom_outbox", Partitions: 12})
		require.NotContains(t, sql, "{{")
		require.Contains(t, sql, `"custom_outbox".records`)
		require.Contains(t, sql, "< 12")
		require.Contains(t, sql, "postrelay_custom_outbox")
	}
	require.Equal(t, 1, engine.SchemaVersion())
	require.Equal(t, fmt.Sprint(engine.SchemaVersion()), fmt.Sprint(engine.Migrations()[len(engine.Migrations())-1].Version))
}
