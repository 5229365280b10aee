package engine

import (
	"context"
	"sync"
	"time"
)

// batcher coalesces the partition actors' database work: the fetches (and
// the completions) that are requested while one statement is running go
// out together in the next one, the way PostgreSQL's group commit folds
// concurrent commits into one flush. Alone, a request goes out at once, so
// nothing waits for company; under load, one round trip serves many
// partitions. It also bounds the engine's connections: at most
// batcherWorkers fetch and batcherWorkers complete statements run at once,
// whatever the number of partitions.
//
// It owns no state of the actors: each request carries its partition,
// epoch and outcome, and each reply goes back to the requesting actor
// alone. Every completion stays fenced by its own partition's lease inside
// the shared statement (see store.sqlComplete).
type batcher struct {
	store     *store
	me        string
	fetches   chan *fetchCall
	completes chan *completeCall
	timeout   time.Duration // bounds one completion statement
	wg        sync.WaitGroup
}

// batcherWorkers is how many statements of each kind may run at once.
const batcherWorkers = 2

// batcherMaxPartitions is the most partitions one statement serves;
// batcherMaxRows bounds the records one coalesced fetch may return.
const (
	batcherMaxPartitions = 64
	batcherMaxRows       = 8000
)

type fetchCall struct {
	req   fetchReq
	ctx   context.Context
	reply chan fetchReply
}

type fetchReply struct {
	res fetchResult
	err error
}

type completeCall struct {
	req   completeReq
	reply chan error
}

func newBatcher(s *store, me string, timeout time.Duration) *batcher {
	return &batcher{
		store:     s,
		me:        me,
		timeout:   timeout,
		fetches:   make(chan *fetchCall),
		completes: make(chan *completeCall),
	}
}

// start runs the workers until stop. Fetch workers end with fetchCtx;
// complete workers keep serving until stop is called, so that actors that
// are stopping can still record what they published.
func (b *batcher) start(fetchCtx context.Context, completeCtx context.Context) {
	for range batcherWorkers {
		b.wg.Go(func() { b.fetchLoop(fetchCtx) })
		b.wg.Go(func() { b.completeLoop(completeCtx) })
	}
}

// wait waits for the workers, after their contexts ended.
func (b *batcher) wait() { b.wg.Wait() }

// fetch returns up to limit available records of partition p (and when its
// next held record becomes available), through a shared statement. The
// result is the caller's alone.
func (b *batcher) fetch(ctx context.Context, p, limit int) (fetchResult, error) {
	call := &fetchCall{req: fetchReq{p: p, limit: limit}, ctx: ctx, reply: make(chan fetchReply, 1)}
	select {
	case b.fetches <- call:
	case <-ctx.Done():
		return fetchResult{}, context.Cause(ctx)
	}
	select {
	case r := <-call.reply:
		return r.res, r.err
	case <-ctx.Done():
		return fetchResult{}, context.Cause(ctx)
	}
}

// complete writes a partition's batch outcome under its lease through a
// shared statement and returns ErrLeaseLost if the fence failed. It does
// not give up when ctx ends: the statement may already be running, and
// the caller must know whether its outcome was written. ctx bounds only
// the wait for a worker.
func (b *batcher) complete(ctx context.Context, p int, epoch int64, c *completion) error {
	call := &completeCall{req: completeReq{p: p, epoch: epoch, c: c}, reply: make(chan error, 1)}
	select {
	case b.completes <- call:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return <-call.reply
}

func (b *batcher) fetchLoop(ctx context.Context) {
	var calls []*fetchCall
	var reqs []fetchReq
	var out []fetchResult
	for {
		calls = calls[:0]
		select {
		case c := <-b.fetches:
			calls = append(calls, c)
		case <-ctx.Done():
			return
		}
		rows := calls[0].req.limit
	more:
		for len(calls) < batcherMaxPartitions && rows < batcherMaxRows {
			select {
			case c := <-b.fetches:
				calls = append(calls, c)
				rows += c.req.limit
			default:
				break more
			}
		}
		// A caller that gave up is left out; the statement runs for the rest.
		reqs = reqs[:0]
		live := calls[:0]
		for _, c := range calls {
			if c.ctx.Err() == nil {
				live = append(live, c)
				reqs = append(reqs, c.req)
			}
		}
		if len(live) == 0 {
			continue
		}
		out = append(out[:0], make([]fetchResult, len(reqs))...)
		err := b.store.fetch(ctx, reqs, out)
		for i, c := range live {
			c.reply <- fetchReply{res: out[i], err: err}
			out[i] = fetchResult{}
		}
	}
}

func (b *batcher) completeLoop(ctx context.Context) {
	var calls []*completeCall
	var reqs []completeReq
	var errs []error
	for {
		calls = calls[:0]
		select {
		case c := <-b.completes:
			calls = append(calls, c)
		case <-ctx.Done():
			return
		}
	more:
		for len(calls) < batcherMaxPartitions {
			select {
			case c := <-b.completes:
				calls = append(calls, c)
			default:
				break more
			}
		}
		reqs = reqs[:0]
		for _, c := range calls {
			reqs = append(reqs, c.req)
		}
		errs = append(errs[:0], make([]error, len(reqs))...)
		sctx, cancel := context.WithTimeout(ctx, b.timeout)
		err := b.store.complete(sctx, b.me, reqs, errs)
		cancel()
		for i, c := range calls {
			if err != nil {
				c.reply <- err
			} else {
				c.reply <- errs[i]
			}
		}
	}
}
