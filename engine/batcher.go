package engine

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// batcher coalesces the partition actors' database work the way
// PostgreSQL's group commit folds concurrent commits into one flush: the
// fetches (and, separately, the completions) requested while statements of
// their kind are running go out together in the next one. There are no
// worker goroutines: a caller that finds a free slot leads, running one
// statement on its own goroutine for itself and every request queued at
// that moment; when it is done it hands the slot to the oldest request
// that queued meanwhile, whose caller then leads the next statement. A lone
// request therefore costs what a direct query costs; under load one round
// trip serves many partitions; and at most batcherSlots statements of each
// kind run at once, so the engine's connections stay bounded whatever the
// number of partitions. When completions start more often than every
// 2 × batcherLinger, a leader first waits batcherLinger for the requests
// that are about to come (as PostgreSQL's commit_delay does when other
// transactions are active): partition actors finish their batches at
// slightly different times, and without the wait each led a statement for
// a few records.
//
// The batcher holds no actor state: each request carries its partition,
// epoch and outcome, and each result goes back to its caller alone. Every
// completion stays fenced by its own partition's lease inside the shared
// statement (see store.sqlComplete).
type batcher struct {
	store    *store
	me       string
	timeout  time.Duration // bounds one completion statement
	fetches  group[fetchReq, fetchResult]
	complete group[completeReq, error]
}

// batcherLinger is how long the leader of a busy completion group waits
// for more requests before it runs its statement (see group.lead).
// Completions only: a completion's wait delays no publish, a fetch's would
// delay every record it returns. The wait raised throughput and cut CPU per
// record, waiting in fetches raised latency (bench/README.md, "Busy
// completions wait 1 ms").
const batcherLinger = time.Millisecond

// batcherSlots is how many statements of each kind may run at once.
const batcherSlots = 2

// batcherMaxPartitions is the most partitions one statement serves;
// batcherMaxRows bounds the records one shared fetch may return.
const (
	batcherMaxPartitions = 64
	batcherMaxRows       = 8000
)

func newBatcher(s *store, me string, timeout time.Duration) *batcher {
	b := &batcher{store: s, me: me, timeout: timeout}
	b.fetches = group[fetchReq, fetchResult]{
		slots: batcherSlots,
		take: func(leader fetchReq, queue []*call[fetchReq, fetchResult]) int {
			n, rows := 0, leader.limit
			for n < len(queue) && n+1 < batcherMaxPartitions && rows+queue[n].req.limit <= batcherMaxRows {
				rows += queue[n].req.limit
				n++
			}
			return n
		},
		run: b.runFetch,
	}
	b.complete = group[completeReq, error]{
		slots:  batcherSlots,
		linger: batcherLinger,
		take: func(_ completeReq, queue []*call[completeReq, error]) int {
			return min(len(queue), batcherMaxPartitions-1)
		},
		run: b.runComplete,
	}
	return b
}

// open sets the contexts statements run under: fetches end with fetchCtx,
// completions with completeCtx, which the engine cancels only after every
// actor has stopped, so that what was published during a stop is
// recorded. No caller's own context ever cancels a shared statement.
func (b *batcher) open(fetchCtx, completeCtx context.Context) {
	b.fetches.ctx, b.complete.ctx = fetchCtx, completeCtx
}

// fetchBatch returns up to limit available records of partition p (and
// when its next held record becomes available), through a shared
// statement. The result is the caller's alone.
func (b *batcher) fetchBatch(ctx context.Context, p, limit int) (fetchResult, error) {
	return b.fetches.do(ctx, fetchReq{p: p, limit: limit})
}

// completeBatch writes a partition's batch outcome under its lease through
// a shared statement and returns ErrLeaseLost if the fence failed.
func (b *batcher) completeBatch(ctx context.Context, p int, epoch int64, c *completion) error {
	res, err := b.complete.do(ctx, completeReq{p: p, epoch: epoch, c: c})
	if err != nil {
		return err
	}
	return res
}

func (b *batcher) runFetch(ctx context.Context, calls []*call[fetchReq, fetchResult]) {
	reqs := make([]fetchReq, len(calls))
	for i, c := range calls {
		reqs[i] = c.req
	}
	out := make([]fetchResult, len(calls))
	err := b.store.fetch(ctx, reqs, out)
	if err != nil && ctx.Err() != nil {
		// The engine is stopping (Run cancels fetches with ErrShutdown
		// before it stops the actors): say so, rather than pass on the
		// driver's "context canceled" as a database failure.
		err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	for i, c := range calls {
		c.res, c.err = out[i], err
	}
}

func (b *batcher) runComplete(ctx context.Context, calls []*call[completeReq, error]) {
	reqs := make([]completeReq, len(calls))
	for i, c := range calls {
		reqs[i] = c.req
	}
	errs := make([]error, len(calls))
	sctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	err := b.store.complete(sctx, b.me, reqs, errs)
	for i, c := range calls {
		c.res, c.err = errs[i], err
	}
}

// group runs requests of one kind in shared statements with at most slots
// statements at once (see batcher).
type group[Req, Res any] struct {
	mu      sync.Mutex
	queue   []*call[Req, Res]
	running int
	slots   int
	// linger is how long a leader waits for more requests when the group
	// is busy (see lead); lastStart is when its last statement started.
	linger    time.Duration
	lastStart time.Time
	ctx       context.Context
	// take returns how many queued calls, from the front, join the
	// leader's request in one statement.
	take func(leader Req, queue []*call[Req, Res]) int
	// run executes one statement for calls, setting each call's res and err.
	run func(ctx context.Context, calls []*call[Req, Res])
}

type call[Req, Res any] struct {
	req Req
	res Res
	err error
	// signal tells a queued caller that its result is ready (false) or
	// that it now leads the next statement (true).
	signal chan bool
}

// do runs req in a shared statement and returns its result. It returns
// early only if ctx is done before req was queued; once queued, the caller
// waits for the statement (bounded by the statement itself), since it may
// have to lead it for the others.
func (g *group[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	if err := context.Cause(ctx); err != nil {
		return zero, err
	}
	c := &call[Req, Res]{req: req, signal: make(chan bool, 1)}
	g.mu.Lock()
	if g.running < g.slots {
		g.running++
		g.mu.Unlock()
		g.lead(c)
		return c.res, c.err
	}
	g.queue = append(g.queue, c)
	g.mu.Unlock()
	// Exactly one signal comes: served by a leader, or promoted to lead
	// (and already taken off the queue, so nobody else serves or promotes
	// this call).
	if <-c.signal {
		g.lead(c)
	}
	return c.res, c.err
}

// lead runs one statement for self and the requests at the front of the
// queue, then hands its slot to the next queued request, if any.
func (g *group[Req, Res]) lead(self *call[Req, Res]) {
	g.mu.Lock()
	if g.linger > 0 && !g.lastStart.IsZero() && time.Since(g.lastStart) < 2*g.linger {
		// Busy: statements of this kind are starting more often than every
		// other linger period, so more requests are about to come. Wait a
		// linger period for them (PostgreSQL's commit_delay does the same
		// for commits when enough other transactions are active), so that
		// they share this statement. When idle a request goes at once.
		g.mu.Unlock()
		time.Sleep(g.linger)
		g.mu.Lock()
	}
	g.lastStart = time.Now()
	n := g.take(self.req, g.queue)
	calls := make([]*call[Req, Res], 0, n+1)
	calls = append(append(calls, self), g.queue[:n]...)
	g.queue = append(g.queue[:0], g.queue[n:]...)
	g.mu.Unlock()

	ctx := g.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	g.run(ctx, calls)

	g.mu.Lock()
	var next *call[Req, Res]
	if len(g.queue) > 0 {
		next = g.queue[0] // inherits the slot
		g.queue = append(g.queue[:0], g.queue[1:]...)
	} else {
		g.running--
	}
	g.mu.Unlock()
	for _, c := range calls[1:] {
		c.signal <- false
	}
	if next != nil {
		next.signal <- true
	}
}
