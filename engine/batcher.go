package engine

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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

// newBatcher returns a batcher whose statements run on s for instance me.
// Fetches run under fetchCtx and end with it; completions run under
// completeCtx, which the engine cancels only after every actor has stopped,
// so that what was published during a stop is recorded. No caller's own
// context ever cancels a shared statement. timeout bounds one completion
// statement.
func newBatcher(s *store, me string, timeout time.Duration, fetchCtx, completeCtx context.Context) *batcher {
	b := &batcher{store: s, me: me, timeout: timeout}
	b.fetches = group[fetchReq, fetchResult]{
		ctx:   fetchCtx,
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
		ctx:    completeCtx,
		slots:  batcherSlots,
		linger: batcherLinger,
		take: func(_ completeReq, queue []*call[completeReq, error]) int {
			return min(len(queue), batcherMaxPartitions-1)
		},
		run: b.runComplete,
	}
	return b
}

// fetchBatch returns up to limit available records of partition p (and
// when its next held record becomes available), through a shared
// statement. The result is the caller's alone.
func (b *batcher) fetchBatch(ctx context.Context, p, limit int) (fetchResult, error) {
	return b.fetches.do(ctx, fetchReq{p: p, limit: limit})
}

// completeBatch writes a partition's batch outcome under its lease through
// a shared statement and returns ErrLeaseLost if the fence failed. coh is
// the cohort of a batch the tail poll handed over (nil otherwise).
func (b *batcher) completeBatch(ctx context.Context, p int, epoch int64, c *completion, coh *cohort) error {
	res, err := b.complete.doIn(ctx, completeReq{p: p, epoch: epoch, c: c}, coh)
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
	// In partition order, so that the statement deletes rows in the order
	// a tail poll completing some of the same batches deletes them (see
	// tailDone): two statements taking the same row locks in opposite
	// orders deadlock, and PostgreSQL takes deadlock_timeout (1 s) to
	// break that.
	// (A copy: lead signals the callers by their places in calls.)
	calls = slices.Clone(calls)
	slices.SortFunc(calls, func(x, y *call[completeReq, error]) int { return x.req.p - y.req.p })
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
	// gathering counts the leaders waiting for their cohort; while one
	// waits, new requests queue (to join its statement) rather than lead.
	gathering int
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
	// cohort is the cohort the request belongs to, if any.
	cohort *cohort
}

// A cohort is the batches one tail poll handed over: their actors publish
// at about the same time and then complete, and a leader among them waits
// (up to batcherLinger) until every member has arrived, so that one
// statement completes them all rather than one per partition. Waiting is
// only an optimization: a member that never arrives (its actor stopped)
// costs the leader the linger, nothing else.
type cohort struct {
	left atomic.Int32
	full chan struct{}
}

func newCohort(n int) *cohort {
	c := &cohort{full: make(chan struct{})}
	c.left.Store(int32(n))
	if n <= 0 {
		close(c.full)
	}
	return c
}

// arrive counts a member in (nil: none). Each member arrives once.
func (c *cohort) arrive() {
	if c != nil && c.left.Add(-1) == 0 {
		close(c.full)
	}
}

// do runs req in a shared statement and returns its result. It returns
// early only if ctx is done before req was queued; once queued, the caller
// waits for the statement (bounded by the statement itself), since it may
// have to lead it for the others.
func (g *group[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	return g.doIn(ctx, req, nil)
}

// doIn is do for a member of cohort coh (nil: none): if it leads, its
// statement waits up to batcherLinger for the rest of the cohort.
func (g *group[Req, Res]) doIn(ctx context.Context, req Req, coh *cohort) (Res, error) {
	var zero Res
	if err := context.Cause(ctx); err != nil {
		coh.arrive()
		return zero, err
	}
	c := &call[Req, Res]{req: req, signal: make(chan bool, 1), cohort: coh}
	g.mu.Lock()
	if g.running < g.slots && g.gathering == 0 {
		g.running++
		g.mu.Unlock()
		coh.arrive()
		g.lead(c)
		return c.res, c.err
	}
	g.queue = append(g.queue, c)
	g.mu.Unlock()
	coh.arrive() // queued: a leader gathering this cohort takes it
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
	if coh := self.cohort; coh != nil && g.linger > 0 {
		// Wait for the rest of the cohort (they queue meanwhile).
		g.mu.Lock()
		g.gathering++
		g.mu.Unlock()
		t := time.NewTimer(g.linger)
		select {
		case <-coh.full:
		case <-t.C:
		}
		t.Stop()
		g.mu.Lock()
		g.gathering--
	} else {
		g.mu.Lock()
	}
	if self.cohort == nil && g.linger > 0 && !g.lastStart.IsZero() && time.Since(g.lastStart) < 2*g.linger {
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
