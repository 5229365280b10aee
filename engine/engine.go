package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strconv"
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
//
// The Engine itself only wires: Run opens the store, builds the batcher and
// the actors' dependencies, and starts the actor tree
//
//	root supervisor ─┬─ listener      (listener.go)
//	                 ├─ tail poll     (listener.go)
//	                 └─ coordinator   (coordinator.go) ── partition actors (partition_actor.go)
//
// Each actor gets what it uses in its own deps struct, nothing else.
type Engine struct {
	pool      *pgxpool.Pool
	publisher message.Publisher
	cfg       Config
	hub       *eventHub
	started   atomic.Bool
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
	return &Engine{pool: pool, publisher: publisher, cfg: cfg, hub: &eventHub{buffer: cfg.EventBuffer}}, nil
}

// Config returns the engine's config with defaults applied.
func (e *Engine) Config() Config { return e.cfg }

// InstanceID returns the id this engine registers as.
func (e *Engine) InstanceID() string { return e.cfg.InstanceID }

// Events returns a new subscription to the engine's events of the given
// kinds (none: every kind) and the function that ends it. The channel has
// Config.EventBuffer capacity; events a slow reader has no room for are
// dropped (see DroppedEvents), never blocking delivery. It is closed when
// the subscription is ended (the function is idempotent) or when Run
// returns. A subscription made after Run returned is closed at once.
func (e *Engine) Events(kinds ...EventKind) (<-chan Event, func()) { return e.hub.subscribe(kinds) }

// DroppedEvents returns how many events subscribers had no room for.
func (e *Engine) DroppedEvents() int64 { return e.hub.dropped.Load() }

// emit hands an event to the Observer (metrics) and to the subscribers:
// both see the same events.
func (e *Engine) emit(ev Event) {
	if obs := e.cfg.Observer; obs != nil {
		obs.ObserveEvent(ev)
	}
	e.hub.emit(ev)
}

// Run relays until ctx is cancelled, then stops gracefully: partition actors
// complete what they published, leases are released at once, and Run
// returns nil. It returns an error at once if the schema is not migrated to
// this binary's version or the database is unreachable, unless ctx was
// cancelled meanwhile: a Run cancelled during start-up returns nil too. An
// engine runs once: a second Run returns ErrEngineStarted.
func (e *Engine) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return ErrEngineStarted
	}
	defer e.hub.close()
	cfg := e.cfg
	st, err := openStore(ctx, e.pool, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil // cancelled during start-up: a clean end, as later
		}
		return err
	}
	defer st.close()

	// The actors stop with cause ErrShutdown when ctx ends.
	runCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(ErrShutdown)
	stopOnCancel := context.AfterFunc(ctx, func() { cancel(ErrShutdown) })
	defer stopOnCancel()
	// Completions are served until every actor has stopped, so that what
	// was published during the stop is recorded.
	completeCtx, stopCompletes := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCompletes()
	batch := newBatcher(st, cfg.InstanceID, cfg.StopTimeout, runCtx, completeCtx)

	wakers := make([]*actors.Waker, st.partitions)
	for i := range wakers {
		wakers[i] = actors.NewWaker()
	}
	hand := make(handoffs, st.partitions)
	supCfg := actors.SupervisorConfig{
		Logger:      cfg.Logger,
		StopTimeout: cfg.StopTimeout,
		OnEvent: func(ae actors.Event) {
			if ae.Kind == actors.EventRestarting {
				e.emit(Event{Kind: EventActorRestarted, Time: ae.Time, Instance: cfg.InstanceID, Err: ae.Err})
			}
		},
	}
	partitions := &partitionDeps{
		cfg:       partitionConfigFrom(cfg),
		batch:     batch,
		leases:    st,
		publish:   safePublisher{e.publisher}.publish,
		emit:      e.emit,
		fastSlots: make(chan struct{}, fastSlotsFor(runtime.GOMAXPROCS(0))),
		handoffs:  hand,
	}
	if cfg.MaxInFlight > 0 {
		partitions.inFlight = make(chan struct{}, cfg.MaxInFlight)
	}
	coord := coordinatorDeps{
		cfg:        coordinatorConfigFrom(cfg),
		store:      st,
		partitions: st.partitions,
		emit:       e.emit,
		supervisor: supCfg,
		partition:  partitions,
		wakers:     wakers,
	}

	// The root stops its children at once on the way out; the coordinator
	// needs a StopTimeout to stop its partition actors and another to
	// release their leases.
	rootCfg := supCfg
	rootCfg.StopTimeout = 2 * cfg.StopTimeout
	root, err := actors.NewSupervisor(rootCfg)
	if err != nil {
		return err
	}
	td := tailDeps{interval: cfg.TailInterval, limit: min(cfg.BatchSize, tailBatchLimit), store: st, handoffs: hand, waker: actors.NewWaker(), instance: cfg.InstanceID}
	root.SpawnFactory(runCtx, "tail", func() actors.Actor { return newTail(td) })
	// LISTEN needs a session: behind a pooler in transaction mode only
	// through ListenURL; without it the tail poll alone finds records.
	if !cfg.DisableNotify && (cfg.Pooler != PoolerTransaction || cfg.ListenURL != "") {
		connConfig := e.pool.Config().ConnConfig
		if cfg.ListenURL != "" {
			if connConfig, err = pgx.ParseConfig(cfg.ListenURL); err != nil { // Validate parsed it already
				return fmt.Errorf("postrelay: ListenURL: %w", err)
			}
		}
		root.Spawn(runCtx, "listener", &listener{d: listenerDeps{
			connConfig: connConfig, channel: cfg.NotifyChannel(), wakers: wakers, tail: td.waker,
			closeWait: cfg.StopTimeout,
		}})
	}
	if cfg.Retention > 0 {
		root.Spawn(runCtx, "history", &historyKeeper{e: e})
	}
	root.SpawnFactory(runCtx, "coordinator", func() actors.Actor { return newCoordinator(coord) })

	if stopErr := root.Serve(runCtx); stopErr != nil && !errors.Is(stopErr, actors.ErrStopped) {
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
