package engine_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/postrelay/postrelay/engine"
)

var safeIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,49}$`)

// Schema names reach SQL only after Validate accepted them, and then only
// quoted: any injection attempt is rejected, and whatever is accepted
// renders into the migration as one quoted identifier.
func FuzzSchemaName(f *testing.F) {
	for _, s := range []string{"postrelay", "outbox_2", `x"; DROP TABLE t; --`, "UPPER", "a b", "", "ü", strings.Repeat("a", 60), `"quoted"`, "pg_catalog"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, schema string) {
		cfg := engine.Config{Schema: schema}.WithDefaults()
		err := cfg.Validate()
		if schema == "" {
			schema = engine.SchemaDefault // empty means the default
		}
		if !safeIdent.MatchString(schema) {
			if err == nil {
				t.Fatalf("schema %q accepted", schema)
			}
			return
		}
		if err != nil {
			t.Fatalf("schema %q rejected: %v", schema, err)
		}
		sql := engine.Migrations()[0].Render(cfg)
		if !strings.Contains(sql, pgx.Identifier{schema}.Sanitize()+".records") {
			t.Fatalf("schema %q not rendered quoted", schema)
		}
	})
}
