package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// BenchmarkFetchComplete measures one partition's hot path against the real
// database: fetch a batch of 100 and complete it (delete, fenced).
func BenchmarkFetchComplete(b *testing.B) {
	pool, schema := pgtest.FreshSchema(b)
	ctx := context.Background()
	cfg, err := Config{Schema: schema, Partitions: 1}.prepared()
	if err != nil {
		b.Fatal(err)
	}
	if err := Migrate(ctx, pool, cfg); err != nil {
		b.Fatal(err)
	}
	st := newStore(pool, cfg)
	got, err := st.acquire(ctx, "bench", time.Hour, []int32{0})
	if err != nil {
		b.Fatal(err)
	}
	w := NewWriter(cfg)
	const batch = 100
	fill := func() {
		tx, err := pool.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		recs := make([]Record, 100*batch)
		for i := range recs {
			recs[i] = Record{Topic: "t", Key: fmt.Sprint("k", i%50), Payload: []byte(`{"n":1}`)}
		}
		if err := w.Write(ctx, tx, recs...); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	var c completion
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%100 == 0 {
			b.StopTimer()
			fill()
			b.StartTimer()
		}
		res, err := st.fetchOne(ctx, 0, batch)
		if err != nil {
			b.Fatal(err)
		}
		buf := res.batch
		c.reset()
		for _, f := range buf {
			c.delivered = append(c.delivered, f.id)
		}
		if err := st.completeOne(ctx, 0, "bench", got[0], &c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkSmallBatches16Partitions is the moderate-rate case the batcher
// exists for: 16 partitions with 4 records each, fetched and completed
// either one statement per partition ("separate", what each actor did on
// its own) or in shared statements ("shared", what the batcher sends when
// their requests meet). It reports records/s.
func BenchmarkSmallBatches16Partitions(b *testing.B) {
	const parts, per = 16, 4
	for _, shared := range []bool{false, true} {
		name := "separate"
		if shared {
			name = "shared"
		}
		b.Run(name, func(b *testing.B) {
			pool, schema := pgtest.FreshSchema(b)
			ctx := context.Background()
			cfg, err := Config{Schema: schema, Partitions: parts}.prepared()
			if err != nil {
				b.Fatal(err)
			}
			if err := Migrate(ctx, pool, cfg); err != nil {
				b.Fatal(err)
			}
			st := newStore(pool, cfg)
			epochs := acquireAll(b, st, "bench", parts)
			// Keys that land in each partition.
			keys := make([][]string, parts)
			for i := 0; ; i++ {
				k := fmt.Sprint("key-", i)
				if p := Partition(k, parts); len(keys[p]) < per {
					keys[p] = append(keys[p], k)
				}
				full := true
				for _, ks := range keys {
					full = full && len(ks) == per
				}
				if full {
					break
				}
			}
			w := NewWriter(cfg)
			var recs []Record
			for _, ks := range keys {
				for _, k := range ks {
					recs = append(recs, Record{Topic: "t", Key: k, Payload: []byte(`{"n":1}`)})
				}
			}
			reqs := make([]fetchReq, parts)
			for i := range reqs {
				reqs[i] = fetchReq{p: i, limit: 100}
			}
			out := make([]fetchResult, parts)
			errs := make([]error, parts)
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				tx, err := pool.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := w.Write(ctx, tx, recs...); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				creqs := make([]completeReq, parts)
				if shared {
					if err := st.fetch(ctx, reqs, out); err != nil {
						b.Fatal(err)
					}
				} else {
					for i := range reqs {
						if out[i], err = st.fetchOne(ctx, i, 100); err != nil {
							b.Fatal(err)
						}
					}
				}
				for i := range out {
					c := &completion{}
					for _, f := range out[i].batch {
						c.delivered = append(c.delivered, f.id)
					}
					if len(c.delivered) != per {
						b.Fatalf("partition %d: fetched %d records, want %d", i, len(c.delivered), per)
					}
					creqs[i] = completeReq{p: i, epoch: epochs[i], c: c}
				}
				if shared {
					if err := st.complete(ctx, "bench", creqs, errs); err != nil {
						b.Fatal(err)
					}
				} else {
					for i, r := range creqs {
						errs[i] = st.completeOne(ctx, r.p, "bench", r.epoch, r.c)
					}
				}
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N*parts*per)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
