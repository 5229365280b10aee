package engine

import (
	"context"
	"embed"
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

// Migration is one versioned schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string // with {{schema}}, {{partitions}} and {{channel}} placeholders
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
			panic(fmt.Sprintf("postrelay: migration file %q has no version prefix", name))
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

// SchemaVersion is the newest schema version this binary knows.
func SchemaVersion() int {
	ms := Migrations()
	return ms[len(ms)-1].Version
}

// Render returns the migration's SQL for a config: placeholders replaced by
// the quoted schema, the partition count and the notification channel. It is
// what `postrelay migrate --print` shows for users of other migration tools.
func (m Migration) Render(cfg Config) string {
	cfg = cfg.WithDefaults()
	r := strings.NewReplacer(
		"{{schema}}", pgx.Identifier{cfg.Schema}.Sanitize(),
		"{{partitions}}", strconv.Itoa(cfg.Partitions),
		"{{channel}}", cfg.NotifyChannel(),
	)
	return r.Replace(m.SQL)
}

// Execer runs SQL; *pgxpool.Pool, *pgx.Conn and pgx.Tx satisfy it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Beginner starts transactions; *pgxpool.Pool and *pgx.Conn satisfy it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migrate creates or upgrades the schema to SchemaVersion. It is idempotent
// and safe when many instances call it at once: a transaction-scoped
// advisory lock serializes them, and each applies only what is missing. It
// refuses a database migrated by a newer binary (ErrSchemaTooNew) and a
// partition count other than the one the schema was created with
// (ErrPartitionsMismatch).
func Migrate(ctx context.Context, db Beginner, cfg Config) error {
	cfg, err := cfg.prepared()
	if err != nil {
		return err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postrelay: migrate schema %q: begin: %w", cfg.Schema, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	q := newSchemaSQL(cfg)
	if _, err := tx.Exec(ctx, q.lock, cfg.Schema); err != nil {
		return fmt.Errorf("postrelay: migrate schema %q: lock: %w", cfg.Schema, err)
	}
	for _, s := range []string{q.createSchema, q.createMigrations} {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("postrelay: migrate schema %q: %w", cfg.Schema, err)
		}
	}
	var current int
	if err := tx.QueryRow(ctx, q.version).Scan(&current); err != nil {
		return fmt.Errorf("postrelay: migrate schema %q: read version: %w", cfg.Schema, err)
	}
	if known := SchemaVersion(); current > known {
		return fmt.Errorf("%w: schema %q is at version %d, this binary knows up to %d", ErrSchemaTooNew, cfg.Schema, current, known)
	}
	if current > 0 {
		n, err := readPartitions(ctx, tx, cfg)
		if err != nil {
			return err
		}
		if n != cfg.Partitions {
			return fmt.Errorf("%w: schema %q has %d partitions, config asks for %d", ErrPartitionsMismatch, cfg.Schema, n, cfg.Partitions)
		}
	}
	for _, m := range Migrations() {
		if m.Version <= current {
			continue
		}
		if _, err := tx.Exec(ctx, m.Render(cfg)); err != nil {
			return fmt.Errorf("postrelay: migrate schema %q: apply %s: %w", cfg.Schema, m.Name, err)
		}
		if _, err := tx.Exec(ctx, q.recordMigration, m.Version, m.Name); err != nil {
			return fmt.Errorf("postrelay: migrate schema %q: record %s: %w", cfg.Schema, m.Name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postrelay: migrate schema %q: commit: %w", cfg.Schema, err)
	}
	return nil
}
