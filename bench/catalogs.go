package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The system catalogs that creating and dropping schemas (every test suite
// here does) fills with dead rows. With autovacuum off, as on this machine,
// nothing removes them, and every catalog lookup a new connection or a
// planner does reads past them.
var churnedCatalogs = []string{
	"pg_class", "pg_attribute", "pg_type", "pg_depend", "pg_index", "pg_constraint",
	"pg_attrdef", "pg_namespace", "pg_sequence", "pg_statistic", "pg_description",
}

// CatalogStat is one catalog's size and tuples.
type CatalogStat struct {
	Name     string  `json:"name"`
	SizeMB   float64 `json:"size_mb"` // table, indexes and TOAST
	LiveRows int64   `json:"live_rows"`
	DeadRows int64   `json:"dead_rows"`
}

// CatalogReport is the catalogs' state before a run and, with
// --vacuum-catalogs, after vacuuming them.
type CatalogReport struct {
	Autovacuum    string        `json:"autovacuum"`
	Before        []CatalogStat `json:"before"`
	Vacuumed      bool          `json:"vacuumed"`
	VacuumSeconds float64       `json:"vacuum_seconds,omitempty"`
	After         []CatalogStat `json:"after,omitempty"`
}

// Summary is one line: the pg_class and pg_attribute figures and the total.
func (r *CatalogReport) Summary() string {
	if r == nil {
		return ""
	}
	line := func(ss []CatalogStat) string {
		var parts []string
		var size float64
		var dead int64
		for _, s := range ss {
			size += s.SizeMB
			dead += s.DeadRows
			if s.Name == "pg_class" || s.Name == "pg_attribute" {
				parts = append(parts, fmt.Sprintf("%s %.1f MB, %d live / %d dead rows", s.Name, s.SizeMB, s.LiveRows, s.DeadRows))
			}
		}
		return fmt.Sprintf("%s; %d catalogs %.1f MB, %d dead rows", strings.Join(parts, "; "), len(ss), size, dead)
	}
	s := "autovacuum " + r.Autovacuum + "; catalogs before the run: " + line(r.Before)
	if r.Vacuumed {
		s += fmt.Sprintf("; after VACUUM (%.1fs): %s", r.VacuumSeconds, line(r.After))
	}
	return s
}

// catalogsStep reports the catalogs and, with --vacuum-catalogs, vacuums
// them and reports again.
func catalogsStep(ctx context.Context, o options, out io.Writer) (*CatalogReport, error) {
	conn, err := pgx.Connect(ctx, o.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL unreachable (start it with .ci/services postgres): %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	r := &CatalogReport{}
	if err := conn.QueryRow(ctx, "SELECT current_setting('autovacuum')").Scan(&r.Autovacuum); err != nil {
		return nil, err
	}
	if r.Before, err = catalogStats(ctx, conn); err != nil {
		return nil, err
	}
	if o.vacuumCatalogs {
		idents := make([]string, len(churnedCatalogs))
		for i, c := range churnedCatalogs {
			idents[i] = pgx.Identifier{"pg_catalog", c}.Sanitize()
		}
		start := time.Now()
		if _, err := conn.Exec(ctx, "VACUUM (ANALYZE) "+strings.Join(idents, ", ")); err != nil {
			return nil, fmt.Errorf("vacuum catalogs (needs a superuser or the catalogs' owner): %w", err)
		}
		r.Vacuumed, r.VacuumSeconds = true, time.Since(start).Seconds()
		if r.After, err = catalogStats(ctx, conn); err != nil {
			return nil, err
		}
	}
	fmt.Fprintln(out, r.Summary())
	return r, nil
}

func catalogStats(ctx context.Context, conn *pgx.Conn) ([]CatalogStat, error) {
	// Dead rows from the statistics counters (flushed by the backends about
	// once a second); live rows counted, as the counters only hold changes
	// since the last statistics reset.
	rows, err := conn.Query(ctx, `SELECT c.relname, pg_total_relation_size(c.oid)::float8 / 1048576, coalesce(s.n_dead_tup, 0)
		FROM pg_class c JOIN unnest($1::text[]) WITH ORDINALITY AS w(name, ord) ON c.relname = w.name
		LEFT JOIN pg_stat_sys_tables s ON s.relid = c.oid
		WHERE c.relnamespace = 'pg_catalog'::regnamespace ORDER BY w.ord`, churnedCatalogs)
	if err != nil {
		return nil, err
	}
	stats, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CatalogStat, error) {
		var s CatalogStat
		err := row.Scan(&s.Name, &s.SizeMB, &s.DeadRows)
		return s, err
	})
	if err != nil {
		return nil, err
	}
	for i := range stats {
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{"pg_catalog", stats[i].Name}.Sanitize()).Scan(&stats[i].LiveRows); err != nil {
			return nil, err
		}
	}
	return stats, nil
}
