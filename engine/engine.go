package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/actors"
)

// Engine relays committed records from PostgreSQL to a Watermill publisher.
// Run one per process; any number of processes share the work through
// partition leases.
type Engine struct {
	pool      *pgxpool.Pool
	publisher message.Publisher
	cfg       Config
	store     *store
	batch     *batcher
	hub       *eventHub

	running atomic.Bool
	wg      sync.WaitGroup // watcher goroutines

	// Set by Run.
	partitions int
	wakers     []*actors.Waker
	sem        chan struct{} // MaxInFlight publishes
	fastSlots  chan struct{} // batches in flight for fast brokers
	// owned lists the partitions this instance holds, sorted, as the
	// coordinator last published them: the tail poll probes only these.
	owned atomic.Pointer[[]int32]
}

// New returns an engine relaying records of the schema in cfg to publisher.
// It validates the config; the database is first contacted by Run.
func New(pool *pgxpool.Pool, publisher message.Publisher, cfg Config) (*Engine, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pool is nil", ErrInvalidConfig)
	}
	if publisher == nil {
		return nil, fmt.Errorf("%w: publisher is nil", ErrInvalidConfig)
	}
	cfg, err := cfg.prepared()
	if err != nil {
		return nil, err
	}
	if m := pool.Config().ConnConfig.DefaultQueryExecMode; cfg.Pooler == PoolerTransaction &&
		(m == pgx.QueryExecModeCacheStatement || m == pgx.QueryExecModeDescribeExec) {
		return nil, fmt.Errorf("%w: Pooler = %q but the pool's default_query_exec_mode is %v, which uses prepared statements a pooler in transaction mode "+
			"cannot keep: set default_query_exec_mode=exec (or cache_describe, simple_protocol) in its URL or config", ErrInvalidConfig, cfg.Pooler, m)
	}
	e := &Engine{
		pool:      pool,
		publisher: publisher,
		cfg:       cfg,
		store:     newStore(pool, cfg),
		hub:       &eventHub{buffer: cfg.EventBuffer},
	}
	e.batch = newBatcher(e.store, cfg.InstanceID, cfg.StopTimeout)
	e.fastSlots = make(chan struct{}, fastSlotsFor(runtime.GOMAXPROCS(0)))
	if cfg.MaxInFlight > 0 {
		e.sem = make(chan struct{}, cfg.MaxInFlight)
	}
	return e, nil
}

// Config returns the engine's config with defaults applied.
func (e *Engine) Config() Config { return e.cfg }

// InstanceID returns the id this engine registers as.
func (e *Engine) InstanceID() string { return e.cfg.InstanceID }

// Events returns a new subscription to the engine's lifecycle events. The
// channel has Config.EventBuffer capacity; events a slow reader has no room
// for are dropped (see DroppedEvents), never blocking delivery. It is closed
// when Run returns.
func (e *Engine) Events() <-chan Event { return e.hub.subscribe() }

// DroppedEvents returns how many events subscribers had no room for.
func (e *Engine) DroppedEvents() int64 { return e.hub.dropped.Load() }

func (e *Engine) emit(ev Event) {
	if obs := e.cfg.Observer; obs != nil {
		obs.ObserveEvent(ev)
	}
	e.hub.emit(ev)
}

// publish calls the publisher, turning a panic into an error.
func (e *Engine) publish(topic string, msg *message.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("postrelay: publisher panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return e.publisher.Publish(topic, msg)
}

// Run relays until ctx is cancelled, then stops gracefully: partition actors
// complete what they published, leases are released at once, and Run
// returns nil. It returns an error at once if the schema is not migrated to
// this binary's version or the database is unreachable. An engine runs once.
func (e *Engine) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return ErrEngineRunning
	}
	defer e.hub.close()
	var n int
	err := retryConnect(ctx, e.cfg, func() error {
		if err := checkVersion(ctx, e.pool, e.cfg); err != nil {
			return err
		}
		var err error
		n, err = readPartitions(ctx, e.pool, e.cfg)
		return err
	})
	if err != nil {
		return err
	}
	e.partitions = n
	hot, err := openDeliveryPool(ctx, e.pool, deliveryPoolOptions{
		conns: e.cfg.DeliveryConns, transaction: e.cfg.Pooler == PoolerTransaction, logger: e.cfg.Logger,
	}, e.store.sqlFetch, e.store.sqlComplete, e.store.sqlTail)
	if err != nil {
		return err
	}
	defer hot.Close()
	e.store.hot = hot
	e.wakers = make([]*actors.Waker, n)
	for i := range e.wakers {
		e.wakers[i] = actors.NewWaker()
	}

	supCfg := actors.SupervisorConfig{
		Logger:      e.cfg.Logger,
		StopTimeout: e.cfg.StopTimeout,
		OnEvent: func(ae actors.Event) {
			if ae.Kind == actors.EventRestarting {
				e.emit(Event{Kind: EventActorRestarted, Time: ae.Time, Instance: e.cfg.InstanceID, Err: ae.Err})
			}
		},
	}
	partSup, err := actors.NewSupervisor(supCfg)
	if err != nil {
		return err
	}
	sup, err := actors.NewSupervisor(supCfg)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(ErrShutdown)
	// Completions are served until every actor has stopped, so that what
	// was published during the stop is recorded.
	completeCtx, stopCompletes := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCompletes()
	e.batch.open(runCtx, completeCtx)

	// Behind a pooler in transaction mode LISTEN needs ListenURL; without
	// it the relay polls.
	if !e.cfg.DisableNotify && (e.cfg.Pooler != PoolerTransaction || e.cfg.ListenURL != "") {
		t := &tail{e: e, waker: actors.NewWaker()}
		sup.Spawn(runCtx, "tail", t)
		sup.Spawn(runCtx, "listener", &listener{e: e, tail: t.waker})
	}
	coord := newCoordinator(e, partSup)
	ref := sup.Spawn(runCtx, "coordinator", coord)

	<-ctx.Done()
	cancel(ErrShutdown)
	stopErr := ref.Stop(2 * e.cfg.StopTimeout) // the coordinator stops its actors, releases
	if err := sup.Stop(e.cfg.StopTimeout); err != nil && stopErr == nil {
		stopErr = err
	}
	e.wg.Wait()
	if stopErr != nil && !errors.Is(stopErr, actors.ErrStopped) {
		return fmt.Errorf("postrelay: engine stop: %w", stopErr)
	}
	return nil
}

// retryConnect runs fn until it succeeds, fails for another reason than a
// refused connection (see isConnectError), or ctx ends: a relay started
// while PostgreSQL refuses connections (too many clients, a role's
// CONNECTION LIMIT, a restart) waits for one, with backoff up to 5s,
// logging each failure, instead of exiting.
func retryConnect(ctx context.Context, cfg Config, fn func() error) error {
	wait := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || !isConnectError(err) || ctx.Err() != nil {
			return err
		}
		cfg.Logger.Warn("postrelay: cannot connect to PostgreSQL; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// fastSlotsFor is how many batches may be in flight at once for a fast
// broker: enough to overlap database round trips on every core.
func fastSlotsFor(procs int) int { return max(4*procs, 8) }

func itoa(i int) string { return strconv.Itoa(i) }

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
