package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

// defaultDatabaseURL is the local PostgreSQL server of a development machine.
const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// common holds the flags every command shares.
type common struct {
	databaseURL string
	schema      string
	logLevel    string
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("postrelay "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.databaseURL, "database-url", defaultDatabaseURL, "PostgreSQL URL (env POSTRELAY_DATABASE_URL)")
	fs.StringVar(&c.schema, "schema", engine.SchemaDefault, "schema holding postrelay's tables (env POSTRELAY_SCHEMA)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error (env POSTRELAY_LOG_LEVEL)")
}

// parse parses args, letting POSTRELAY_<FLAG> environment variables fill
// flags not given on the command line.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return usageError{}
		}
		return usageError{}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := adapters.EnvPrefixDefault + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageError{fmt.Errorf("environment variable %s=%q: %v", env, v, e)}
			}
		}
	})
	return err
}

func (c *common) logger(stderr io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)}
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})), nil
}

// pool opens the database and checks it answers, with an error naming the
// (redacted) URL.
func (c *common) pool(ctx context.Context) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(c.databaseURL)
	if err != nil {
		return nil, usageError{fmt.Errorf("--database-url %q: %v", redactURL(c.databaseURL), redactErr(err))}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", redactURL(c.databaseURL), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s is unreachable: %w", redactURL(c.databaseURL), err)
	}
	return pool, nil
}

// redactURL hides the password of a URL.
func redactURL(s string) string { return adapters.Redact(s) }

// redactErr hides anything that looks like a password in an error message.
func redactErr(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(adapters.RedactError(err))
}
