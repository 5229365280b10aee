// Command postrelay migrates, runs and inspects a postrelay outbox.
//
//	postrelay migrate [--database-url URL] [--schema S] [--partitions N] [--print]
//	postrelay run     [--database-url URL] [--broker URL] [--config FILE] [flags]
//	postrelay status  [--database-url URL] [--json]
//	postrelay dead    list|requeue|purge [--id N,...] [--topic T] [--all] [--json]
//	postrelay demo    [--records N]   (writes and relays records: local PostgreSQL, memory broker)
//	postrelay inbox   migrate|purge [--inbox-schema S] [--consumer NAME,...] [--retention D]
//	postrelay console [--database-url URL] [--http 127.0.0.1:8080] [--http-token T] [--read-only] [--hide-payloads]
//	postrelay replay  --to URL|--config FILE [--topic T] [--key K] [--since T] [--until T] [--rate N] [--after-id N]
//
// Every flag has an environment variable: POSTRELAY_DATABASE_URL, POSTRELAY_BROKER,
// POSTRELAY_SCHEMA, and so on (POSTRELAY_ + the flag name in upper case, '-' as '_').
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `postrelay — a transactional outbox relay for PostgreSQL and Watermill

Usage:
  postrelay migrate  create or upgrade the schema
  postrelay run      relay committed records to a broker (standalone relay / sidecar)
  postrelay status   instances, partition owners, backlog, dead letters
  postrelay dead     list|requeue|purge dead letters
  postrelay demo     write records and relay them (local PostgreSQL, memory broker)
  postrelay inbox    migrate|purge the consumer inbox (exactly-once effects)
  postrelay console  operator console: web page and HTTP API (stuck keys, dead letters, leases)
  postrelay replay   re-publish retained history (run --retention) with the original message ids

Run 'postrelay <command> --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "migrate":
		err = cmdMigrate(ctx, args[1:], stdout, stderr)
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(ctx, args[1:], stdout, stderr)
	case "dead":
		err = cmdDead(ctx, args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "inbox":
		err = cmdInbox(ctx, args[1:], stdout, stderr)
	case "console":
		err = cmdConsole(ctx, args[1:], stdout, stderr)
	case "replay":
		err = cmdReplay(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "postrelay: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		if ue.err != nil {
			fmt.Fprintf(stderr, "postrelay: %v\n", ue.err)
		}
		return 2
	}
	fmt.Fprintf(stderr, "postrelay: %v\n", redactErr(err))
	return 1
}

// usageError marks bad command-line input (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string {
	if e.err == nil {
		return "usage"
	}
	return e.err.Error()
}
