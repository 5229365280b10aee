// Command bench measures postrelay: drain throughput, commit-to-publish
// latency, scaling over relay processes, and the cost of the outbox to the
// writing application, with River (v0.51.2, used as an outbox) and
// Watermill's forwarder (watermill-sql/v4) as baselines in the same run
// (--baseline river,watermill-forwarder; postrelay-retention is postrelay
// with Retention, to measure its cost). Steady-load runs alternate the
// systems round by round (--rounds) with the same producers and the same
// latency clock (just before the producer's business INSERT).
//
//	go run ./bench drain    [--records 200000] [--keys 1000] [--instances 1] [--publish-delay 0] [--tracing off] [--rounds 1] [--baseline river,watermill-forwarder,postrelay-retention]
//	go run ./bench latency  [--rate 1000[,3000,5000]] [--duration 10s] [--warmup 2s] [--rounds 1] [--baseline river,watermill-forwarder]
//	go run ./bench scale    [--instances 1,2,4,8] [--instance-concurrency 8] [--publish-delay 5ms]
//	go run ./bench write    [--clients 8] [--duration 5s] [--commit-rates 1000,3000] [--rounds 3] [--baseline river,watermill-forwarder]
//	go run ./bench console  [--records 200000] [--rounds 3] [--console-interval 1s] (a drain's cost of a polling console)
//	go run ./bench catalogs [--vacuum-catalogs] (the system catalogs' sizes and dead tuples)
//	go run ./bench all      (every scenario; rewrites bench/README.md's results and bench/scale.svg)
//	go run ./bench report   (re-renders bench/README.md's results from bench/results.json)
//
// --vacuum-catalogs (any scenario) vacuums the system catalogs that schema
// churn bloats before the run; the catalogs' sizes and dead tuples are
// reported before (and after) it.
//
// Each scenario prints a table while it runs and, with --json, one JSON
// object as the last line of stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	databaseURL  string
	records      int
	fixedTotal   bool
	keys         int
	partitions   int
	instances    string
	publishDelay time.Duration
	tracing      string
	baseline     string
	rates        string
	duration     time.Duration
	warmup       time.Duration
	rounds       int
	commitRates  string
	// commitReference adds the plain-table system to steady-load rounds.
	commitReference bool
	vacuumCatalogs  bool
	river           riverConfig
	catalogs        *CatalogReport // the catalogs before the run
	concurrency     int
	batchSize       int
	clients         int
	out             string
	json            bool
	keepSchema      bool
	publishLanes    int
	progressEvery   time.Duration
	// latency through a pooler: the relay's own URL and mode
	relayURL     string
	pooler       string
	listenURL    string
	pollInterval time.Duration
	tailInterval time.Duration
	retention    time.Duration
	deadRecords  int
	// console: how often the polling console requests its pages' calls
	consoleInterval time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("usage: go run ./bench drain|latency|scale|write|inbox|console|catalogs|all|report [flags]")
	}
	scenario := args[0]
	if !slices.Contains([]string{"drain", "latency", "scale", "write", "inbox", "console", "catalogs", "all", "report"}, scenario) {
		return fmt.Errorf("unknown scenario %q: want drain, latency, scale, write, inbox, console, catalogs, all or report", scenario)
	}
	fs := flag.NewFlagSet("bench "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.databaseURL, "database-url", envOr("POSTRELAY_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL")
	fs.IntVar(&o.records, "records", 0, "records to preload (drain, console: 200000; scale: 20000 per relay)")
	fs.BoolVar(&o.fixedTotal, "fixed-total", false, "scale: preload --records and --keys in total for every relay count, not per relay")
	fs.IntVar(&o.keys, "keys", 0, "distinct keys (drain, console: 1000; scale: 10000 per relay)")
	fs.IntVar(&o.partitions, "partitions", 64, "partitions")
	fs.StringVar(&o.instances, "instances", "", "relay processes (drain: 1; scale: 1,2,4,8)")
	fs.DurationVar(&o.publishDelay, "publish-delay", -1, "simulated broker round trip per Publish call (drain: 0, scale: 5ms)")
	fs.StringVar(&o.tracing, "tracing", "off", "on: relays create a span per attempt (SDK, spans dropped); off: no tracing")
	fs.StringVar(&o.baseline, "baseline", "", "river, watermill-forwarder, postrelay-retention (postrelay with --retention, else 24h) as a comma list, run in that order: run the same workload through them")
	fs.StringVar(&o.rates, "rate", "1000", "latency: producer transactions offered per second (a comma list runs each rate)")
	fs.DurationVar(&o.duration, "duration", 0, "latency: 10s; write: 5s (each measurement)")
	fs.DurationVar(&o.warmup, "warmup", -1, "latency, write's commit cost: load before each measurement, not measured (2s)")
	fs.IntVar(&o.rounds, "rounds", 0, "latency, drain, scale: 1; write, console, all: 3 (rounds alternating the systems; drain reverses the order every other round)")
	fs.StringVar(&o.commitRates, "commit-rates", "1000,3000", "write: paced rates of the COMMIT cost comparison (empty: skip it)")
	fs.BoolVar(&o.commitReference, "commit-reference", true, "latency: also run the plain-table COMMIT reference in each round")
	fs.BoolVar(&o.vacuumCatalogs, "vacuum-catalogs", false, "VACUUM the system catalogs schema churn bloats (pg_class, pg_attribute, pg_type, pg_depend, …) before the run")
	fs.IntVar(&o.river.MaxWorkers, "river-max-workers", 2000, "river baseline: the queue's MaxWorkers (riverbench: 2000)")
	fs.DurationVar(&o.river.FetchCooldown, "river-fetch-cooldown", 2*time.Millisecond, "river baseline: FetchCooldown (riverbench: 2ms)")
	fs.DurationVar(&o.river.FetchPollInterval, "river-fetch-poll-interval", 20*time.Millisecond, "river baseline: FetchPollInterval (riverbench: 20ms)")
	fs.IntVar(&o.concurrency, "instance-concurrency", 0, "Publish calls in flight per relay process (engine MaxInFlight; scale: 8; 0: no bound)")
	fs.IntVar(&o.batchSize, "batch-size", 0, "relay batch size (0: engine default)")
	fs.IntVar(&o.publishLanes, "publish-concurrency", 0, "keys of one partition published at once (0: engine default)")
	fs.IntVar(&o.clients, "clients", 8, "write: concurrent writer connections")
	fs.StringVar(&o.relayURL, "relay-database-url", "", "latency: the relay's PostgreSQL URL, e.g. through PgBouncer (default: --database-url, which the writers use)")
	fs.StringVar(&o.pooler, "pooler", "", `latency: engine Pooler ("transaction" behind a transaction pooler)`)
	fs.StringVar(&o.listenURL, "listen-url", "", "latency: engine ListenURL (a direct URL for LISTEN behind a transaction pooler)")
	fs.DurationVar(&o.pollInterval, "poll-interval", 0, "latency: engine PollInterval (0: engine default)")
	fs.DurationVar(&o.tailInterval, "tail-interval", 0, "latency: engine TailInterval (0: engine default, 2ms)")
	fs.StringVar(&o.out, "out", "bench/scale.svg", "scale: chart file (SVG)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object as the last line of stdout")
	fs.BoolVar(&o.keepSchema, "keep-schema", false, "do not drop the benchmark schema")
	fs.IntVar(&o.deadRecords, "dead-records", 0, "postrelay only: write and delete this many records before the run, leaving their dead tuples (vacuum lag)")
	fs.DurationVar(&o.retention, "retention", 0, "relays keep delivered records this long in the history table (engine Retention; 0: off)")
	fs.DurationVar(&o.consoleInterval, "console-interval", time.Second, "console: how often the console's pages' API calls are requested (the pages refresh every 5s)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (latency runs the relay in it) to this file")
	memProfile := fs.String("memprofile", "", "write this process's allocations profile (alloc_space: everything allocated during the run) to this file at the end")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	o.databaseURL, o.relayURL = withAppName(o.databaseURL), withAppName(o.relayURL)
	if o.rounds < 0 {
		return fmt.Errorf("--rounds %d: must be positive", o.rounds)
	}
	if _, err := parseBaselines(o.baseline); err != nil {
		return err
	}
	if _, err := parseRates(o.rates); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		runtime.MemProfileRate = 64 << 10 // coarser than the default: sampling costs the run little
		defer func() {
			if f, err := os.Create(*memProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				_ = f.Close()
			}
		}()
	}
	var result any
	var err error
	if scenario != "catalogs" && scenario != "report" {
		if o.catalogs, err = catalogsStep(ctx, o, stdout); err != nil {
			return err
		}
	}
	switch scenario {
	case "drain":
		result, err = runDrain(ctx, o, stdout)
	case "latency":
		result, err = runLatency(ctx, o, stdout)
	case "scale":
		result, err = runScale(ctx, o, stdout)
	case "write":
		result, err = runWrite(ctx, o, stdout)
	case "inbox":
		result, err = runInbox(ctx, o, stdout)
	case "console":
		result, err = runConsole(ctx, o, stdout)
	case "catalogs":
		result, err = catalogsStep(ctx, o, stdout)
	case "all":
		result, err = runAll(ctx, o, stdout)
	case "report":
		result, err = runReport()
	default:
		return fmt.Errorf("unknown scenario %q: want drain, latency, scale, write, inbox, console, catalogs, all or report", scenario)
	}
	if err != nil {
		return err
	}
	if o.json {
		b, err := json.Marshal(result)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func orDur(v, def time.Duration) time.Duration {
	if v < 0 {
		return def
	}
	return v
}

// steadyDefaults fills the steady-load settings a scenario left unset.
func (o options) steadyDefaults(duration time.Duration, rounds int) options {
	if o.duration <= 0 {
		o.duration = duration
	}
	if o.warmup < 0 {
		o.warmup = 2 * time.Second
	}
	if o.rounds == 0 {
		o.rounds = rounds
	}
	return o
}
