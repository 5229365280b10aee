package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// The River baseline: River (riverqueue/river, riverpgxv5 driver) used as an
// outbox. The application inserts one job per record in its transaction
// (Client.InsertTx); a worker's Work publishes the job's payload to the same
// in-memory Watermill publisher the other systems publish to, and returns
// nil. River runs in this process with the settings of River's own
// benchmark (cmd/river/riverbench): FetchCooldown 2 ms, FetchPollInterval
// 20 ms, one queue with MaxWorkers 2,000; the --river-* flags change them
// (the run in issue 11 used MaxWorkers 10,000 and FetchPollInterval 50 ms).
// Each run migrates River's tables (rivermigrate) into a schema of its own,
// river_<random>, which the client is pointed at (Config.Schema) and which
// is dropped afterwards.

// riverConfig is how the River baseline is configured.
type riverConfig struct {
	MaxWorkers        int           `json:"max_workers"`
	FetchCooldown     time.Duration `json:"fetch_cooldown_ns"`
	FetchPollInterval time.Duration `json:"fetch_poll_interval_ns"`
}

// String describes the configuration for tables and logs.
func (c riverConfig) String() string {
	return fmt.Sprintf("MaxWorkers %d, FetchCooldown %s, FetchPollInterval %s", c.MaxWorkers, c.FetchCooldown, c.FetchPollInterval)
}

// riverOutboxArgs is one outgoing record as a River job.
type riverOutboxArgs struct {
	ID      string          `json:"id"`
	Topic   string          `json:"topic"`
	Payload json.RawMessage `json:"payload"`
}

func (riverOutboxArgs) Kind() string { return "postrelay_bench_outbox" }

// riverOutboxWorker publishes each job's payload and completes it.
type riverOutboxWorker struct {
	river.WorkerDefaults[riverOutboxArgs]
	pub message.Publisher
}

func (w *riverOutboxWorker) Work(_ context.Context, job *river.Job[riverOutboxArgs]) error {
	return w.pub.Publish(job.Args.Topic, message.NewMessage(job.Args.ID, message.Payload(job.Args.Payload)))
}

// riverSetup is a migrated River schema with a client on it.
type riverSetup struct {
	schema string
	pool   *pgxpool.Pool // River's own connections
	client *river.Client[pgx.Tx]
}

// newRiverSetup creates schema river_<random>, migrates River into it and
// builds a client whose worker publishes to pub. The caller starts it.
func newRiverSetup(ctx context.Context, o options, pub message.Publisher) (*riverSetup, error) {
	pool, err := openPool(ctx, o, 16)
	if err != nil {
		return nil, err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	s := &riverSetup{schema: "river_" + hex.EncodeToString(b[:]), pool: pool}
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{s.schema}.Sanitize()); err != nil {
		pool.Close()
		return nil, fmt.Errorf("river: create schema: %w", err)
	}
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Schema: s.schema, Logger: discardLogger()})
	if err != nil {
		s.cleanup(ctx, o)
		return nil, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		s.cleanup(ctx, o)
		return nil, fmt.Errorf("river: migrate schema %q: %w", s.schema, err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &riverOutboxWorker{pub: pub})
	rc := o.river
	s.client, err = river.NewClient(driver, &river.Config{
		FetchCooldown:     rc.FetchCooldown,
		FetchPollInterval: rc.FetchPollInterval,
		Logger:            discardLogger(),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: rc.MaxWorkers}},
		Schema:            s.schema,
		Workers:           workers,
	})
	if err != nil {
		s.cleanup(ctx, o)
		return nil, fmt.Errorf("river: client (%s): %w", rc, err)
	}
	return s, nil
}

// cleanup drops the schema (unless --keep-schema) and closes the pool.
func (s *riverSetup) cleanup(ctx context.Context, o options) {
	if !o.keepSchema {
		_, _ = s.pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+pgx.Identifier{s.schema}.Sanitize()+" CASCADE")
	}
	s.pool.Close()
}

// stop stops the client, waiting for running jobs.
func (s *riverSetup) stop(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return s.client.Stop(sctx)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// riverDrain preloads records as River jobs in one transaction, then starts
// the client and times until every job's payload has been published.
func riverDrain(ctx context.Context, o options, records int, out io.Writer) (secs, cpuUS float64, err error) {
	cp := newCountingPublisher(records, o.publishDelay)
	s, err := newRiverSetup(ctx, o, cp)
	if err != nil {
		return 0, 0, err
	}
	defer s.cleanup(ctx, o)
	payload := json.RawMessage(`{"order_id":123456,"amount_cents":4200,"currency":"EUR","status":"paid"}`)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, 0, err
	}
	const chunk = 5000 // riverbench's insert batch
	params := make([]river.InsertManyParams, 0, chunk)
	for i := range records {
		params = append(params, river.InsertManyParams{Args: riverOutboxArgs{ID: watermill.NewUUID(), Topic: "bench.orders", Payload: payload}})
		if len(params) == chunk || i == records-1 {
			if _, err := s.client.InsertManyFastTx(ctx, tx, params); err != nil {
				_ = tx.Rollback(ctx)
				return 0, 0, fmt.Errorf("river: preload: %w", err)
			}
			params = params[:0]
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, err
	}
	start, cpu0 := time.Now(), machineCPU()
	if err := s.client.Start(ctx); err != nil {
		return 0, 0, fmt.Errorf("river: start: %w", err)
	}
	defer func() {
		if serr := s.stop(ctx); serr != nil && err == nil {
			err = fmt.Errorf("river: stop: %w", serr)
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-cp.done:
			secs := time.Since(start).Seconds()
			return secs, cpuPerRecordUS(machineCPU()-cpu0, records), nil
		case <-tick.C:
			cp.mu.Lock()
			c := cp.n
			cp.mu.Unlock()
			fmt.Fprintf(out, "  … river: %d/%d (%.0f rec/s)\n", c, records, float64(c)/time.Since(start).Seconds())
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
}
