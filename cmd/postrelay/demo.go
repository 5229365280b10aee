package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sync/errgroup"

	"github.com/postrelay/postrelay/engine"
)

// cmdDemo is the "main job on defaults": it migrates the schema on the local
// database, writes records in transactions (some rolled back) while a relay
// publishes them to an in-memory broker, and checks that every committed
// record arrived, in order per key, and no rolled-back one did.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	var c common
	c.register(fs)
	records := fs.Int("records", 20000, "records to write")
	keys := fs.Int("keys", 100, "distinct keys")
	perTx := fs.Int("per-tx", 10, "records per transaction")
	writers := fs.Int("writers", 4, "concurrent writer transactions")
	_ = fs.Lookup("schema").Value.Set("postrelay_demo")
	fs.Lookup("schema").DefValue = "postrelay_demo"
	if err := parse(fs, args); err != nil {
		return err
	}
	if *records < 1 || *keys < 1 || *perTx < 1 || *writers < 1 {
		return usageError{errors.New("--records, --keys, --per-tx and --writers must be positive")}
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	pool, err := c.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	cfg := engine.Config{Schema: c.schema, Logger: log}
	if err := engine.Migrate(ctx, pool, cfg); err != nil {
		return err
	}
	// Start from an empty outbox so the check below is exact.
	if _, err := pool.Exec(ctx, "TRUNCATE "+cfg.WithDefaults().Schema+".records, "+cfg.WithDefaults().Schema+".dead_letters"); err != nil {
		return fmt.Errorf("demo: empty the outbox: %w", err)
	}

	pub := newDemoPublisher()
	eng, err := engine.New(pool, pub, cfg)
	if err != nil {
		return err
	}
	runCtx, stopEngine := context.WithCancel(ctx)
	engDone := make(chan error, 1)
	go func() { engDone <- eng.Run(runCtx) }()
	defer func() {
		stopEngine()
		<-engDone
	}()

	fmt.Fprintf(stdout, "postrelay demo: schema %q, %d records over %d keys, %d per transaction, %d writers, memory broker\n",
		c.schema, *records, *keys, *perTx, *writers)
	w := engine.NewWriter(cfg)
	start := time.Now()
	var mu sync.Mutex
	committed := 0
	g, gctx := errgroup.WithContext(ctx)
	per := (*records + *writers - 1) / *writers
	for wi := 0; wi < *writers; wi++ {
		g.Go(func() error {
			for i := wi * per; i < min((wi+1)*per, *records); i += *perTx {
				n := min(*perTx, min((wi+1)*per, *records)-i)
				recs := make([]engine.Record, n)
				for j := range recs {
					seq := i + j
					// Each key is written by one writer: per-key order is
					// insertion order when a key's writes are serialized.
					key := (seq%max(*keys / *writers, 1))*(*writers) + wi
					recs[j] = engine.Record{Topic: "demo.orders", Key: "customer-" + strconv.Itoa(key),
						Payload: []byte(`{"order":` + strconv.Itoa(seq) + `}`)}
				}
				rollback := (i / *perTx)%10 == 9 // every tenth transaction rolls back
				tx, err := pool.Begin(gctx)
				if err != nil {
					return err
				}
				if err := w.Write(gctx, tx, recs...); err != nil {
					_ = tx.Rollback(gctx)
					return err
				}
				if rollback {
					if err := tx.Rollback(gctx); err != nil {
						return err
					}
					continue
				}
				if err := tx.Commit(gctx); err != nil {
					return err
				}
				mu.Lock()
				committed += n
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("demo: write: %w", err)
	}
	wrote := time.Since(start)
	fmt.Fprintf(stdout, "wrote %d committed records (%d rolled back) in %v: %.0f records/s\n",
		committed, *records-committed, wrote.Round(time.Millisecond), float64(*records)/wrote.Seconds())

	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for {
		if pub.unique() >= committed {
			break
		}
		select {
		case <-pub.changed():
		case <-deadline.C:
			return fmt.Errorf("demo: only %d of %d records relayed within 2m", pub.unique(), committed)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	took := time.Since(start)
	st := pub.stats()
	fmt.Fprintf(stdout, "relayed %d records in %v (%.0f records/s end to end)\n", st.unique, took.Round(time.Millisecond), float64(st.unique)/took.Seconds())
	fmt.Fprintf(stdout, "duplicates %d, per-key order violations %d, rolled-back records delivered %d\n", st.dups, st.orderViolations, st.unique-committed)
	if st.orderViolations > 0 || st.unique != committed {
		return errors.New("demo: check failed")
	}
	fmt.Fprintln(stdout, "ok: every committed record delivered, in order per key; see `postrelay status --schema "+c.schema+"`")
	return nil
}

// demoPublisher is the in-memory broker of the demo: it counts what arrives
// and checks per-key order.
type demoPublisher struct {
	mu      sync.Mutex
	seen    map[string]bool
	lastID  map[string]int64
	dups    int
	order   int
	changes chan struct{}
}

type demoStats struct{ unique, dups, orderViolations int }

func newDemoPublisher() *demoPublisher {
	return &demoPublisher{seen: map[string]bool{}, lastID: map[string]int64{}, changes: make(chan struct{}, 1)}
}

func (p *demoPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	for _, m := range msgs {
		if p.seen[m.UUID] {
			p.dups++
			continue
		}
		p.seen[m.UUID] = true
		id, _ := strconv.ParseInt(m.Metadata.Get(engine.MetadataRecordID), 10, 64)
		key := m.Metadata.Get(engine.MetadataKey)
		if id < p.lastID[key] {
			p.order++
		}
		p.lastID[key] = id
	}
	p.mu.Unlock()
	select {
	case p.changes <- struct{}{}:
	default:
	}
	return nil
}

func (p *demoPublisher) Close() error { return nil }

func (p *demoPublisher) changed() <-chan struct{} { return p.changes }

func (p *demoPublisher) unique() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.seen)
}

func (p *demoPublisher) stats() demoStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return demoStats{unique: len(p.seen), dups: p.dups, orderViolations: p.order}
}
