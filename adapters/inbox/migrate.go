package inbox

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one versioned change of the inbox schema.
type Migration struct {
	Version int
	Name    string
	SQL     string // with a {{schema}} placeholder
}

// Migrations returns the embedded migrations in version order.
func Migrations() []Migration {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		panic(err) // embedded at build time
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			panic(fmt.Sprintf("inbox: migration file %q has no version prefix", name))
		}
		b, err := migrationFiles.ReadFile("migrations/" + name)
		if err != nil {
			panic(err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms
}

// SchemaVersion is the newest inbox schema version this binary knows.
func SchemaVersion() int {
	ms := Migrations()
	return ms[len(ms)-1].Version
}

// Render returns the migration's SQL for a schema ("" means SchemaDefault).
func (m Migration) Render(schema string) string {
	return strings.ReplaceAll(m.SQL, "{{schema}}", pgx.Identifier{cmp.Or(schema, SchemaDefault)}.Sanitize())
}

// Beginner starts transactions; *pgxpool.Pool and *pgx.Conn satisfy it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migrate creates or upgrades the inbox schema ("" means SchemaDefault) to
// SchemaVersion. It is idempotent and safe when many instances call it at
// once: a transaction-scoped advisory lock serializes them, and each
// applies only what is missing. It refuses a schema migrated by a newer
// binary (ErrSchemaTooNew).
func Migrate(ctx context.Context, db Beginner, schema string) error {
	schema = cmp.Or(schema, SchemaDefault)
	if err := validateSchema(schema); err != nil {
		return err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("inbox: migrate schema %q: begin: %w", schema, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('postrelay.inbox.migrate'), hashtext($1))", schema); err != nil {
		return fmt.Errorf("inbox: migrate schema %q: lock: %w", schema, err)
	}
	for _, s := range []string{
		"CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{schema}.Sanitize(),
		"CREATE TABLE IF NOT EXISTS " + ident(schema, "schema_migrations") +
			" (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
	} {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("inbox: migrate schema %q: %w", schema, err)
		}
	}
	var current int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+ident(schema, "schema_migrations")).Scan(&current); err != nil {
		return fmt.Errorf("inbox: migrate schema %q: read version: %w", schema, err)
	}
	if known := SchemaVersion(); current > known {
		return fmt.Errorf("%w: schema %q is at version %d, this binary knows up to %d", ErrSchemaTooNew, schema, current, known)
	}
	for _, m := range Migrations() {
		if m.Version <= current {
			continue
		}
		if _, err := tx.Exec(ctx, m.Render(schema)); err != nil {
			return fmt.Errorf("inbox: migrate schema %q: apply %s: %w", schema, m.Name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+ident(schema, "schema_migrations")+" (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			return fmt.Errorf("inbox: migrate schema %q: record %s: %w", schema, m.Name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("inbox: migrate schema %q: commit: %w", schema, err)
	}
	return nil
}

// notMigrated turns "relation/schema does not exist" into ErrNotMigrated
// naming the schema and table; other errors pass through.
func notMigrated(err error, schema, table string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000") {
		return fmt.Errorf("%w: table %s.%s does not exist (%s): run inbox.Migrate or `postrelay inbox migrate --schema %s`",
			ErrNotMigrated, schema, table, pe.Message, schema)
	}
	return err
}
