package main

import (
	"context"
	"fmt"
	"io"

	"github.com/postrelay/postrelay/engine"
)

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", stderr)
	var c common
	c.register(fs)
	partitions := fs.Int("partitions", engine.PartitionsDefault, "partition count, fixed at creation (1..1024) (env POSTRELAY_PARTITIONS)")
	print := fs.Bool("print", false, "print the SQL for other migration tools instead of applying it")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := engine.Config{Schema: c.schema, Partitions: *partitions}
	if err := cfg.WithDefaults().Validate(); err != nil {
		return usageError{err}
	}
	if *print {
		for _, m := range engine.Migrations() {
			fmt.Fprintf(stdout, "-- %s\n%s\n", m.Name, m.Render(cfg))
		}
		return nil
	}
	pool, err := c.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := engine.Migrate(ctx, pool, cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema %q migrated to version %d\n", c.schema, engine.SchemaVersion())
	return nil
}
