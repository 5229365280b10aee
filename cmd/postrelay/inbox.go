package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/postrelay/postrelay/adapters/inbox"
)

const inboxUsage = "usage: postrelay inbox migrate|purge [--inbox-schema S] [--print] [--consumer NAME,...] [--retention D] [--batch N]"

// cmdInbox runs `postrelay inbox migrate|purge`: the consumer-side inbox's
// schema (package adapters/inbox) and its purge of expired message ids.
func cmdInbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "migrate" && args[0] != "purge") {
		fmt.Fprintln(stderr, inboxUsage)
		return usageError{}
	}
	verb := args[0]
	fs := newFlagSet("inbox "+verb, stderr)
	var c common
	fs.StringVar(&c.databaseURL, "database-url", defaultDatabaseURL, "PostgreSQL URL (env POSTRELAY_DATABASE_URL)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error (env POSTRELAY_LOG_LEVEL)")
	schema := fs.String("inbox-schema", inbox.SchemaDefault, "schema holding the inbox tables (env POSTRELAY_INBOX_SCHEMA)")
	print := fs.Bool("print", false, "migrate: print the SQL for other migration tools instead of applying it")
	consumers := fs.String("consumer", "", "purge: comma-separated consumer names (default: every registered consumer)")
	retention := fs.Duration("retention", 0, "purge: keep ids newer than this (default: each consumer's registered retention)")
	batch := fs.Int("batch", inbox.PurgeBatchDefault, "purge: most rows deleted per statement (each its own transaction)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if err := (inbox.Config{Consumer: "cli", Schema: *schema}).WithDefaults().Validate(); err != nil {
		return usageError{fmt.Errorf("--inbox-schema: %w", err)}
	}
	if verb == "migrate" && *print {
		for _, m := range inbox.Migrations() {
			fmt.Fprintf(stdout, "-- %s\n%s\n", m.Name, m.Render(*schema))
		}
		return nil
	}
	if *retention < 0 || (*retention > 0 && *retention < time.Second) {
		return usageError{fmt.Errorf("--retention %v: must be at least 1s", *retention)}
	}
	if *batch < 1 {
		return usageError{fmt.Errorf("--batch %d: must be at least 1", *batch)}
	}
	pool, err := c.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if verb == "migrate" {
		if err := inbox.Migrate(ctx, pool, *schema); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "inbox schema %q migrated to version %d\n", *schema, inbox.SchemaVersion())
		return nil
	}
	var names []string
	for _, n := range strings.Split(*consumers, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	got, err := inbox.PurgeConsumers(ctx, pool, inbox.PurgeParams{Schema: *schema, Consumers: names, Retention: *retention, Batch: *batch})
	if errors.Is(err, inbox.ErrUnknownConsumer) {
		return usageError{err}
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(stdout, "consumer %q: purged %d message ids\n", k, got[k])
	}
	if len(keys) == 0 && err == nil {
		fmt.Fprintf(stdout, "no consumer registered in inbox schema %q\n", *schema)
	}
	return err
}
