package engine

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The group runs every request exactly once, returns each caller its own
// result, never runs more statements at once than it has slots, never puts
// more requests in one statement than take allows, and shares statements
// when requests arrive while statements are running. Gates (not sleeps)
// hold the first statements open so the rest queue behind them.
func TestGroupSharesStatementsAndBoundsThem(t *testing.T) {
	t.Parallel()
	const callers, slots, maxPer = 200, 2, 16
	var running, peak, statements atomic.Int64
	var seen sync.Map // request → how many times it ran
	gate := make(chan struct{})
	var gateOnce sync.Once
	var sizes sync.Map
	g := &group[int, int]{
		slots: slots,
		ctx:   context.Background(),
		take:  func(_ int, q []*call[int, int]) int { return min(len(q), maxPer-1) },
		run: func(_ context.Context, calls []*call[int, int]) {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			if statements.Add(1) <= slots {
				<-gate // the first statements wait until everyone queued
			}
			sizes.Store(statements.Load(), len(calls))
			for _, c := range calls {
				v, _ := seen.LoadOrStore(c.req, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
				c.res = c.req * 10
			}
			running.Add(-1)
		},
	}
	var wg sync.WaitGroup
	var queued atomic.Int64
	for i := range callers {
		wg.Go(func() {
			queued.Add(1)
			res, err := g.do(context.Background(), i)
			assert.NoError(t, err)
			assert.Equal(t, i*10, res, "caller %d got another's result", i)
		})
	}
	// Open the gate once every caller has at least started (the first
	// statements are then surely held while others queue).
	deadline := time.Now().Add(10 * time.Second)
	for queued.Load() < callers && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling a counter, with a deadline
	}
	gateOnce.Do(func() { close(gate) })
	wg.Wait()

	for i := range callers {
		v, ok := seen.Load(i)
		require.True(t, ok, "request %d never ran", i)
		require.Equal(t, int64(1), v.(*atomic.Int64).Load(), "request %d ran more than once", i)
	}
	require.LessOrEqual(t, peak.Load(), int64(slots), "more statements at once than slots")
	biggest := 0
	sizes.Range(func(_, v any) bool { biggest = max(biggest, v.(int)); return true })
	require.LessOrEqual(t, biggest, maxPer, "a statement took more than take allows")
	require.Greater(t, biggest, 1, "queued requests never shared a statement")
	require.Less(t, statements.Load(), int64(callers), "every request ran alone")
	g.mu.Lock()
	defer g.mu.Unlock()
	require.Zero(t, g.running, "slots leaked")
	require.Empty(t, g.queue)
}

// A lone request runs on the caller's own goroutine at once, and a caller
// whose context is done before it queues gets the cause without running.
func TestGroupLoneRequestAndCancelledCaller(t *testing.T) {
	t.Parallel()
	var ran atomic.Int64
	g := &group[int, int]{
		slots: 1,
		take:  func(int, []*call[int, int]) int { return 0 },
		run: func(_ context.Context, calls []*call[int, int]) {
			ran.Add(1)
			calls[0].res = 7
		},
	}
	res, err := g.do(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, 7, res)
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(ErrShutdown)
	_, err = g.do(ctx, 2)
	require.ErrorIs(t, err, ErrShutdown)
	require.Equal(t, int64(1), ran.Load())
}

// An idle group runs a lone request at once even with a long linger; a
// busy one (a statement started within two linger periods) waits a linger
// period first, so requests arriving meanwhile share its statement.
func TestGroupLingersOnlyWhenBusy(t *testing.T) {
	t.Parallel()
	var log sizeLog
	newGroup := func(linger time.Duration) *group[int, int] { return echoGroup(1, linger, &log) }

	idle := newGroup(time.Hour)
	done := make(chan int, 1)
	go func() {
		res, _ := idle.do(context.Background(), 1)
		done <- res
	}()
	select {
	case res := <-done:
		require.Equal(t, 1, res)
	case <-time.After(10 * time.Second):
		t.Fatal("an idle group's lone request waited for the linger")
	}

	busy := newGroup(time.Second)
	busy.lastStart = time.Now() // a statement just started: busy
	log.reset()
	var wg sync.WaitGroup
	wg.Go(func() {
		res, err := busy.do(context.Background(), 0)
		assert.NoError(t, err)
		assert.Equal(t, 0, res)
	})
	// Wait until the leader holds the slot, then queue three more while it
	// lingers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		busy.mu.Lock()
		r := busy.running
		busy.mu.Unlock()
		if r == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond) // polling the slot count, with a deadline
	}
	for i := 1; i <= 3; i++ {
		wg.Go(func() {
			res, err := busy.do(context.Background(), i)
			assert.NoError(t, err)
			assert.Equal(t, i, res)
		})
	}
	wg.Wait()
	require.Equal(t, []int{4}, log.get(), "the requests that came during the linger did not share the statement")
}

// sizeLog records how many calls each statement of an echoGroup served.
type sizeLog struct {
	mu    sync.Mutex
	sizes []int
}

func (l *sizeLog) add(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sizes = append(l.sizes, n)
}

func (l *sizeLog) get() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sizes)
}

func (l *sizeLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sizes = nil
}

// echoGroup is a group whose statements answer every call with its
// request and log their sizes.
func echoGroup(slots int, linger time.Duration, log *sizeLog) *group[int, int] {
	return &group[int, int]{
		slots:  slots,
		linger: linger,
		ctx:    context.Background(),
		take:   func(_ int, q []*call[int, int]) int { return len(q) },
		run: func(_ context.Context, calls []*call[int, int]) {
			log.add(len(calls))
			for _, c := range calls {
				c.res = c.req
			}
		},
	}
}

// A fetch cut short because the engine is stopping reports ErrShutdown (the
// cause Run cancels fetches with), so that the actor stops quietly instead
// of logging a failed batch and being restarted.
func TestFetchCancelledByShutdownReportsIt(t *testing.T) {
	t.Parallel()
	_, _, cfg, st := newTestStore(t, 4)
	fetchCtx, cancel := context.WithCancelCause(context.Background())
	cancel(ErrShutdown)
	b := newBatcher(st, cfg.InstanceID, time.Second, fetchCtx, context.Background())
	_, err := b.fetchBatch(context.Background(), 0, 10)
	require.ErrorIs(t, err, ErrShutdown)
}

// The members of a cohort (the batches one tail poll handed over) complete
// in one statement even though the group has free slots: the first to lead
// waits for the rest (up to the linger) and the others queue meanwhile. A
// member that never arrives costs the leader the linger, nothing more.
func TestGroupGathersACohortIntoOneStatement(t *testing.T) {
	t.Parallel()
	var log sizeLog
	g := echoGroup(2, 10*time.Second, &log) // only the cohort's arrival ends the wait
	const members = 5
	coh := newCohort(members)
	var wg sync.WaitGroup
	for i := range members {
		wg.Go(func() {
			res, err := g.doIn(context.Background(), i, coh)
			assert.NoError(t, err)
			assert.Equal(t, i, res)
		})
	}
	wg.Wait()
	require.Equal(t, []int{members}, log.get(), "one statement for the whole cohort")

	// A cohort one of whose members never arrives: the leader goes after
	// the linger with those that came.
	g.linger = 20 * time.Millisecond
	log.reset()
	short := newCohort(3)
	for i := range 2 {
		wg.Go(func() {
			_, err := g.doIn(context.Background(), i, short)
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	require.Equal(t, []int{2}, log.get())
}
