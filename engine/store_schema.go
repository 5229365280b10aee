package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The schema's statements: what Migrate runs around the migrations (whose
// DDL is migrations/*.sql), the version check and the partition count. See
// store.go for where the rest of the engine's SQL lives.

// schemaSQL holds the statements that create, upgrade and check a schema.
type schemaSQL struct {
	lock             string // serializes migrations of one schema ($1: schema name)
	createSchema     string
	createMigrations string // the schema_migrations table
	version          string // the schema's version, 0 when none applied
	recordMigration  string // $1 version, $2 name
	partitions       string // the partition count fixed at creation
}

func newSchemaSQL(cfg Config) schemaSQL {
	return schemaSQL{
		lock:         "SELECT pg_advisory_xact_lock(hashtext('postrelay.migrate'), hashtext($1))",
		createSchema: "CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{cfg.Schema}.Sanitize(),
		createMigrations: "CREATE TABLE IF NOT EXISTS " + cfg.ident("schema_migrations") +
			" (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
		version:         "SELECT coalesce(max(version), 0) FROM " + cfg.ident("schema_migrations"),
		recordMigration: "INSERT INTO " + cfg.ident("schema_migrations") + " (version, name) VALUES ($1, $2)",
		partitions:      "SELECT value FROM " + cfg.ident("meta") + " WHERE key = 'partitions'",
	}
}

// rowQuerier runs a query returning one row: Execer, Tx and pgx.Tx are
// rowQueriers.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readPartitions reads the partition count fixed at creation. It is the one
// place the count is read: by Migrate, the Writer, the Engine and Status.
func readPartitions(ctx context.Context, q rowQuerier, cfg Config) (int, error) {
	var v string
	err := q.QueryRow(ctx, newSchemaSQL(cfg).partitions).Scan(&v)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.Is(err, pgx.ErrNoRows) || (errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")) {
			return 0, fmt.Errorf("%w: schema %q (run `postrelay migrate` or engine.Migrate)", ErrNotMigrated, cfg.Schema)
		}
		return 0, fmt.Errorf("postrelay: read partition count of schema %q: %w", cfg.Schema, err)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > PartitionsMax {
		return 0, fmt.Errorf("postrelay: schema %q has an invalid partition count %q", cfg.Schema, v)
	}
	return n, nil
}

// checkVersion returns an error unless the schema is migrated to exactly the
// version this binary knows.
func checkVersion(ctx context.Context, q rowQuerier, cfg Config) error {
	var current int
	err := q.QueryRow(ctx, newSchemaSQL(cfg).version).Scan(&current)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
			return fmt.Errorf("%w: schema %q (run `postrelay migrate` or engine.Migrate)", ErrNotMigrated, cfg.Schema)
		}
		return fmt.Errorf("postrelay: read schema version of %q: %w", cfg.Schema, err)
	}
	known := SchemaVersion()
	switch {
	case current == 0:
		return fmt.Errorf("%w: schema %q (run `postrelay migrate` or engine.Migrate)", ErrNotMigrated, cfg.Schema)
	case current > known:
		return fmt.Errorf("%w: schema %q is at version %d, this binary knows up to %d", ErrSchemaTooNew, cfg.Schema, current, known)
	case current < known:
		return fmt.Errorf("%w: schema %q is at version %d, this binary needs %d (run `postrelay migrate`)", ErrNotMigrated, cfg.Schema, current, known)
	}
	return nil
}
