// Multi-instance: three relay engines share the partitions; when one stops,
// its partitions move to the others at once (graceful stop releases leases).
// Ownership is printed as it moves.
//
//	go run ./examples/multi-instance
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

func main() {
	if err := run(context.Background(), os.Stdout, "multi_instance_example"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type relay struct {
	name string
	stop context.CancelFunc
	done chan error
}

func run(ctx context.Context, out io.Writer, schema string) error {
	dbURL := os.Getenv("POSTRELAY_DATABASE_URL")
	if dbURL == "" {
		dbURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	base := engine.Config{Schema: schema, Partitions: 12, HeartbeatInterval: 200 * time.Millisecond, LeaseTTL: 2 * time.Second}
	if err := engine.Migrate(ctx, pool, base); err != nil {
		return err
	}
	broker := adapters.NewMemory(adapters.Config{})

	var relays []*relay
	start := func(name string) error {
		cfg := base
		cfg.InstanceID = name
		eng, err := engine.New(pool, broker, cfg)
		if err != nil {
			return err
		}
		c, cancel := context.WithCancel(ctx)
		r := &relay{name: name, stop: cancel, done: make(chan error, 1)}
		go func() { r.done <- eng.Run(c) }()
		relays = append(relays, r)
		return nil
	}
	defer func() {
		for _, r := range relays {
			r.stop()
			<-r.done
		}
	}()
	for _, n := range []string{"relay-a", "relay-b", "relay-c"} {
		if err := start(n); err != nil {
			return err
		}
	}
	// Wait until the 12 partitions are spread 4/4/4.
	if err := waitOwners(ctx, pool, schema, out, func(o map[string]int) bool {
		return o["relay-a"] == 4 && o["relay-b"] == 4 && o["relay-c"] == 4
	}); err != nil {
		return err
	}
	fmt.Fprintln(out, "stopping relay-b")
	stopped := time.Now()
	relays[1].stop()
	if err := <-relays[1].done; err != nil {
		return err
	}
	relays = append(relays[:1], relays[2:]...)
	if err := waitOwners(ctx, pool, schema, out, func(o map[string]int) bool {
		return o["relay-a"] == 6 && o["relay-c"] == 6
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "relay-b's partitions moved in %v (lease TTL %v: a graceful stop does not wait for it)\n",
		time.Since(stopped).Round(100*time.Millisecond), base.LeaseTTL)
	return nil
}

// waitOwners prints the ownership whenever it changes until done holds.
func waitOwners(ctx context.Context, pool *pgxpool.Pool, schema string, out io.Writer, done func(map[string]int) bool) error {
	last := ""
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := pool.Query(ctx, "SELECT owner, count(*) FROM "+pgx.Identifier{schema, "partitions"}.Sanitize()+
			" WHERE owner IS NOT NULL AND lease_until > now() GROUP BY owner")
		if err != nil {
			return err
		}
		owners := map[string]int{}
		var o string
		var n int
		if _, err := pgx.ForEachRow(rows, []any{&o, &n}, func() error { owners[o] = n; return nil }); err != nil {
			return err
		}
		var parts []string
		for k, v := range owners {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(parts)
		if line := strings.Join(parts, " "); line != last {
			fmt.Fprintf(out, "partitions: %s\n", line)
			last = line
		}
		if done(owners) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ownership did not settle: %s", last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
