// Command bench measures postrelay: drain throughput, commit-to-publish
// latency, scaling over relay processes, and the cost of the outbox to the
// writing application, with Watermill's forwarder (watermill-sql/v4) as the
// baseline in the same run.
//
//	go run ./bench drain   [--records 200000] [--keys 1000] [--instances 1] [--publish-delay 0] [--tracing off] [--baseline watermill-forwarder]
//	go run ./bench latency [--rate 1000] [--duration 10s] [--baseline watermill-forwarder]
//	go run ./bench scale   [--instances 1,2,4,8] [--instance-concurrency 8] [--publish-delay 5ms]
//	go run ./bench write   [--clients 8] [--duration 5s]
//	go run ./bench all     (every scenario; rewrites bench/README.md's results and bench/scale.svg)
//	go run ./bench report  (re-renders bench/README.md's results from bench/results.json)
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
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

type options struct {
	databaseURL   string
	records       int
	keys          int
	partitions    int
	instances     string
	publishDelay  time.Duration
	tracing       string
	baseline      string
	rate          int
	duration      time.Duration
	concurrency   int
	batchSize     int
	clients       int
	out           string
	json          bool
	keepSchema    bool
	publishLanes  int
	progressEvery time.Duration
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
		return fmt.Errorf("usage: go run ./bench drain|latency|scale|write|all [flags]")
	}
	scenario := args[0]
	fs := flag.NewFlagSet("bench "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.databaseURL, "database-url", envOr("POSTRELAY_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL")
	fs.IntVar(&o.records, "records", 0, "records to preload (drain: 200000, scale: 20000)")
	fs.IntVar(&o.keys, "keys", 0, "distinct keys (drain: 1000, scale: 10000)")
	fs.IntVar(&o.partitions, "partitions", 64, "partitions")
	fs.StringVar(&o.instances, "instances", "", "relay processes (drain: 1; scale: 1,2,4,8)")
	fs.DurationVar(&o.publishDelay, "publish-delay", -1, "simulated broker round trip per Publish call (drain: 0, scale: 5ms)")
	fs.StringVar(&o.tracing, "tracing", "off", "on: relays create a span per attempt (SDK, spans dropped); off: no tracing")
	fs.StringVar(&o.baseline, "baseline", "", "watermill-forwarder: run the same workload through Watermill's forwarder")
	fs.IntVar(&o.rate, "rate", 1000, "latency: records committed per second")
	fs.DurationVar(&o.duration, "duration", 0, "latency: 10s; write: 5s")
	fs.IntVar(&o.concurrency, "instance-concurrency", 0, "Publish calls in flight per relay process (engine MaxInFlight; scale: 8; 0: no bound)")
	fs.IntVar(&o.batchSize, "batch-size", 0, "relay batch size (0: engine default)")
	fs.IntVar(&o.publishLanes, "publish-concurrency", 0, "keys of one partition published at once (0: engine default)")
	fs.IntVar(&o.clients, "clients", 8, "write: concurrent writer connections")
	fs.StringVar(&o.out, "out", "bench/scale.svg", "scale: chart file (SVG)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object as the last line of stdout")
	fs.BoolVar(&o.keepSchema, "keep-schema", false, "do not drop the benchmark schema")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (latency runs the relay in it) to this file")
	if err := fs.Parse(args[1:]); err != nil {
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
	var result any
	var err error
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
	case "all":
		result, err = runAll(ctx, o, stdout)
	case "report":
		result, err = runReport()
	default:
		return fmt.Errorf("unknown scenario %q: want drain, latency, scale, write, all or report", scenario)
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
