package engine

import (
	"context"
	"fmt"
	"testing"

	"github.com/postrelay/postrelay/actors"
)

// BenchmarkTailPoll measures the tail poll's statement against the real
// database with 64 partitions whose actors all wait: "quiet" finds nothing
// new (the probes only), "steady" finds two new records in two partitions
// and completes the two the previous poll handed over, as at steady load.
// Its allocations per poll are the relay's steady-state garbage
// (bench/README.md, "Steady-state garbage").
func BenchmarkTailPoll(b *testing.B) {
	const parts = 64
	for _, steady := range []bool{false, true} {
		name := "quiet"
		if steady {
			name = "steady"
		}
		b.Run(name, func(b *testing.B) {
			pool, _, cfg, _ := newTestStore(b, parts)
			ctx := context.Background()
			// The delivery pool's sessions, as the engine runs the poll
			// (generic plans, asynchronous commits).
			st, err := openStore(ctx, pool, cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(st.close)
			epochs := acquireAll(b, st, "me", parts)
			hand := make(handoffs, parts)
			hs := make([]*handoff, parts)
			for p := range hs {
				hs[p] = newHandoff()
				hand[p].Store(hs[p])
				hs[p].idle()
			}
			tl := newTail(tailDeps{interval: cfg.TailInterval, limit: tailBatchLimit, store: st, handoffs: hand, waker: actors.NewWaker(), instance: "me"})
			if _, err := tl.poll(ctx); err != nil {
				b.Fatal(err)
			}
			keyA, keyB := twoPartitionKeys(parts)
			pa, pb := Partition(keyA, parts), Partition(keyB, parts)
			for b.Loop() {
				if steady {
					b.StopTimer()
					writeKeys(b, pool, cfg, keyA, keyB)
					b.StartTimer()
				}
				if _, err := tl.poll(ctx); err != nil {
					b.Fatal(err)
				}
				if !steady {
					continue
				}
				for _, p := range []int{pa, pb} {
					r := <-hs[p].ch
					if len(r.batch) != 1 || r.lost {
						b.Fatal(fmt.Sprintf("partition %d: handed %d records, lost %v", p, len(r.batch), r.lost))
					}
					// Delivered: the next poll completes it.
					hs[p].done.Store(&tailDone{epoch: epochs[p], ids: []int64{r.batch[0].id}})
					hs[p].idle()
				}
			}
		})
	}
}
