package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"gopkg.in/yaml.v3"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

// outboxesFile is a relay config file serving several outboxes from one
// process: schemas of one database and/or several databases, each with its
// own broker. Relay flags (--lease-ttl, --batch-size, …) apply to all.
//
//	delivery_conns_total: 9   # delivery connections shared out among the outboxes
//	pool_conns: 3             # main-pool connections per distinct database_url
//	outboxes:
//	  - schema: tenant_a
//	    database_url: postgres://relay@db1:5432/app
//	    broker: nats://127.0.0.1:4222
//	  - schema: billing
//	    database_url: postgres://relay@pgbouncer:6433/billing
//	    pooler: transaction
//	    listen_url: postgres://relay@db2:5432/billing
//	    broker: amqp://guest:guest@127.0.0.1:5672/
type outboxesFile struct {
	DeliveryConnsTotal int          `yaml:"delivery_conns_total"`
	PoolConns          int          `yaml:"pool_conns"`
	Outboxes           []outboxSpec `yaml:"outboxes"`
}

// outboxSpec is one outbox of an outboxesFile.
type outboxSpec struct {
	Schema      string `yaml:"schema"`
	DatabaseURL string `yaml:"database_url"`
	Broker      string `yaml:"broker"`
	Pooler      string `yaml:"pooler"`
	ListenURL   string `yaml:"listen_url"`
	Partitions  int    `yaml:"partitions"`
}

// loadOutboxesFile reads path as a relay config file listing outboxes; ok
// is false when the file has no `outboxes` key (a broker config file).
func loadOutboxesFile(path string) (f outboxesFile, ok bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return f, false, fmt.Errorf("--config %s: %w", path, err)
	}
	var probe map[string]any
	if err := yaml.Unmarshal(b, &probe); err != nil {
		return f, false, nil // not ours: the broker config loader reports it
	}
	if _, ok := probe["outboxes"]; !ok {
		return f, false, nil
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return f, true, fmt.Errorf("--config %s: %s", path, adapters.Redact(err.Error()))
	}
	if len(f.Outboxes) == 0 {
		return f, true, fmt.Errorf("--config %s: outboxes is empty", path)
	}
	seen := map[string]bool{}
	for i, o := range f.Outboxes {
		if o.DatabaseURL == "" {
			return f, true, fmt.Errorf("--config %s: outboxes[%d].database_url is empty", path, i)
		}
		if o.Schema == "" {
			return f, true, fmt.Errorf("--config %s: outboxes[%d].schema is empty", path, i)
		}
		if o.Broker == "" {
			return f, true, fmt.Errorf("--config %s: outboxes[%d].broker is empty", path, i)
		}
		if err := (adapters.Config{URL: o.Broker}).WithDefaults().Validate(); err != nil {
			return f, true, fmt.Errorf("--config %s: outboxes[%d].broker: %w", path, i, err)
		}
		k := o.DatabaseURL + "\x00" + o.Schema
		if seen[k] {
			return f, true, fmt.Errorf("--config %s: outboxes[%d]: schema %q of %s is listed twice", path, i, o.Schema, adapters.Redact(o.DatabaseURL))
		}
		seen[k] = true
	}
	if f.DeliveryConnsTotal != 0 && f.DeliveryConnsTotal < len(f.Outboxes) {
		return f, true, fmt.Errorf("--config %s: delivery_conns_total = %d: must be at least one per outbox (%d)", path, f.DeliveryConnsTotal, len(f.Outboxes))
	}
	if f.PoolConns < 0 {
		return f, true, fmt.Errorf("--config %s: pool_conns = %d: must not be negative", path, f.PoolConns)
	}
	return f, true, nil
}

// deliveryShares splits total delivery connections among n outboxes, as
// evenly as possible (each at least one).
func deliveryShares(total, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = total / n
		if i < total%n {
			out[i]++
		}
	}
	return out
}

// runOutboxes runs one engine per outbox of f until ctx ends. Outboxes on
// the same database URL share one pool (pool_conns connections, default
// --pool-conns); the delivery pools share delivery_conns_total (default
// 2 per outbox + 3, which is 5 for one outbox). It returns the engines'
// errors, after stopping them all.
func runOutboxes(ctx context.Context, f outboxesFile, base engine.Config, r *relayFlags, log *slog.Logger) error {
	total := cmp.Or(f.DeliveryConnsTotal, 2*len(f.Outboxes)+3)
	shares := deliveryShares(total, len(f.Outboxes))
	poolConns := cmp.Or(f.PoolConns, r.poolConns)

	pools := map[string]*pgxpool.Pool{}
	defer func() {
		for _, p := range pools {
			p.Close()
		}
	}()
	type unit struct {
		eng *engine.Engine
		pub message.Publisher
	}
	var units []unit
	defer func() {
		for _, u := range units {
			_ = u.pub.Close()
		}
	}()
	for i, o := range f.Outboxes {
		pool := pools[o.DatabaseURL]
		if pool == nil {
			var err error
			if pool, err = openRelayPool(ctx, o.DatabaseURL, o.Pooler, poolConns, log); err != nil {
				return fmt.Errorf("outbox %s: %w", o.Schema, err)
			}
			pools[o.DatabaseURL] = pool
		}
		cfg := base
		cfg.Schema = o.Schema
		cfg.Pooler = o.Pooler
		cfg.ListenURL = o.ListenURL
		cfg.DeliveryConns = shares[i]
		cfg.Partitions = cmp.Or(o.Partitions, base.Partitions)
		cfg.Logger = log.With("schema", o.Schema)
		if r.migrate {
			if err := engine.Migrate(ctx, pool, cfg); err != nil {
				return fmt.Errorf("outbox %s: %w", o.Schema, err)
			}
		}
		pub, err := adapters.NewPublisher(ctx, adapters.Config{URL: o.Broker, Logger: cfg.Logger})
		if err != nil {
			return fmt.Errorf("outbox %s: %w", o.Schema, err)
		}
		if r.publishDelay > 0 {
			pub = delayedPublisher{Publisher: pub, delay: r.publishDelay}
		}
		eng, err := engine.New(pool, pub, cfg)
		if err != nil {
			_ = pub.Close()
			return fmt.Errorf("outbox %s: %w", o.Schema, err)
		}
		units = append(units, unit{eng: eng, pub: pub})
		log.Info("postrelay: relay running", "instance_id", eng.InstanceID(), "schema", o.Schema,
			"database", adapters.Redact(o.DatabaseURL), "broker", adapters.Redact(o.Broker), "delivery_conns", shares[i])
	}
	log.Info("postrelay: serving outboxes", "outboxes", len(units), "databases", len(pools),
		"connection_budget", len(pools)*poolConns+total+len(units))

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errs := make([]error, len(units))
	var wg sync.WaitGroup
	for i, u := range units {
		wg.Go(func() {
			if err := u.eng.Run(runCtx); err != nil {
				errs[i] = fmt.Errorf("outbox %s: %w", f.Outboxes[i].Schema, err)
				cancel(errs[i]) // one failing outbox stops the process: its supervisor restarts it
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("postrelay: relay stopped", "outboxes", len(units))
	return nil
}

// openRelayPool opens the relay's main pool on url with maxConns
// connections. Behind a transaction pooler it runs statements unprepared
// (default_query_exec_mode=exec unless the URL chooses a mode). While
// PostgreSQL refuses connections for want of room (too many clients, a
// role's CONNECTION LIMIT) it waits, retrying with backoff up to 5 s, rather
// than exiting; an unreachable server is an error at once.
func openRelayPool(ctx context.Context, url, pooler string, maxConns int, log *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, usageError{fmt.Errorf("--database-url %q: %v", redactURL(url), redactErr(err))}
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	if pooler == engine.PoolerTransaction && !strings.Contains(url, "default_query_exec_mode") {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", redactURL(url), err)
	}
	wait := 100 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := pool.Ping(pctx)
		cancel()
		if err == nil {
			return pool, nil
		}
		var pe *pgconn.PgError
		if ctx.Err() != nil || !errors.As(err, &pe) || !(strings.HasPrefix(pe.Code, "53") || pe.Code == "57P03") {
			pool.Close()
			return nil, fmt.Errorf("database %s is unreachable: %w", redactURL(url), err)
		}
		log.Warn("postrelay: PostgreSQL refuses connections; retrying", "database", redactURL(url), "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}
