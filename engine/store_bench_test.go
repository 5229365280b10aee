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
