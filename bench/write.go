package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/engine"
)

// WriteResult is the write scenario's JSON.
type WriteResult struct {
	Scenario        string  `json:"scenario"`
	Clients         int     `json:"clients"`
	TxPerSecWithout float64 `json:"tx_per_sec_without_outbox"`
	TxPerSecWith    float64 `json:"tx_per_sec_with_outbox"`
	OverheadPct     float64 `json:"overhead_pct"`
	// The same record queued in the business statement's pgx.Batch.
	TxPerSecPipelined    float64 `json:"tx_per_sec_pipelined"`
	PipelinedOverheadPct float64 `json:"pipelined_overhead_pct"`
	// The floor: the record's bytes inserted into a plain table of the
	// outbox's shape (LIKE records INCLUDING ALL) in the same batch, as the
	// steady-load plain-table reference does; what any second row costs.
	TxPerSecPlainRow    float64 `json:"tx_per_sec_plain_row"`
	PlainRowOverheadPct float64 `json:"plain_row_overhead_pct"`
	// QueueWrite against the plain row: what the outbox adds beyond the row.
	PipelinedVsPlainRowPct float64 `json:"pipelined_vs_plain_row_pct"`
	BulkBatch              int     `json:"bulk_batch"`
	BulkRecordsPerSec      float64 `json:"bulk_records_per_sec"`
	RoundsEachVariant      int     `json:"rounds_each_variant"`
	SecondsEachVariant     float64 `json:"seconds_each_round"`
	// COMMIT cost at paced rates (issue 11 goal 3), per --commit-rates.
	CommitCost []CommitCostAt `json:"commit_cost,omitempty"`
	River      *riverConfig   `json:"river_config,omitempty"`
	Catalogs   *CatalogReport `json:"catalogs,omitempty"`
}

// CommitCostAt compares the COMMIT of a producer transaction (one business
// INSERT plus one record) across systems at one paced rate, against the same
// transaction writing the record's columns into a plain table.
type CommitCostAt struct {
	Rate        int             `json:"rate"`
	Rounds      int             `json:"rounds"`
	DurationSec float64         `json:"duration_sec"`
	Systems     []SystemSummary `json:"systems"`
	Runs        []SystemRun     `json:"runs"`
}

// commitCost runs the producers at each rate, alternating postrelay, the
// baselines and the plain table round by round.
func commitCost(ctx context.Context, o options, out io.Writer) ([]CommitCostAt, error) {
	if strings.TrimSpace(o.commitRates) == "" {
		return nil, nil
	}
	rates, err := parseRates(o.commitRates)
	if err != nil {
		return nil, fmt.Errorf("--commit-rates: %w", err)
	}
	baselines, err := parseBaselines(o.baseline)
	if err != nil {
		return nil, err
	}
	o = o.steadyDefaults(5*time.Second, 3)
	systems := append(append([]string{sysPostrelay}, baselines...), sysPlain)
	var res []CommitCostAt
	for _, rate := range rates {
		fmt.Fprintf(out, "COMMIT cost at %d tx/s: %s, %d round(s) of %s (+ %s warm-up)\n", rate, strings.Join(systems, ", "), o.rounds, o.duration, o.warmup)
		runs, err := steadyRounds(ctx, o, systems, rate, out)
		if err != nil {
			return nil, err
		}
		c := CommitCostAt{Rate: rate, Rounds: o.rounds, DurationSec: o.duration.Seconds(), Systems: summarize(systems, runs), Runs: runs}
		for _, s := range c.Systems {
			vs := ""
			if s.CommitP99VsPlain > 0 {
				vs = fmt.Sprintf("  ratio to the plain table: p50 %.2f×, p99 %.2f×", s.CommitP50VsPlain, s.CommitP99VsPlain)
			}
			fmt.Fprintf(out, "  %-20s COMMIT p50 %.2f (%.2f–%.2f) ms, p99 %.2f (%.2f–%.2f) ms at %.0f tx/s%s\n", s.System,
				s.CommitP50MS.Median, s.CommitP50MS.Min, s.CommitP50MS.Max, s.CommitP99MS.Median, s.CommitP99MS.Min, s.CommitP99MS.Max,
				s.AchievedRate.Median, vs)
		}
		res = append(res, c)
	}
	return res, nil
}

// runWrite measures what the outbox costs the writing application: a small
// business transaction (one INSERT) with and without one outbox record, in
// alternating rounds, and bulk writes of many records per transaction.
func runWrite(ctx context.Context, o options, out io.Writer) (*WriteResult, error) {
	if o.duration <= 0 {
		o.duration = 5 * time.Second
	}
	pool, err := openPool(ctx, o, int32(o.clients+2))
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	cfg, cleanup, err := benchSchema(ctx, pool, o)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	orders := pgx.Identifier{cfg.Schema, "orders"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+orders+" (id bigserial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return nil, err
	}
	plain := pgx.Identifier{cfg.Schema, "plain_records"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+plain+" (LIKE "+pgx.Identifier{cfg.Schema, "records"}.Sanitize()+" INCLUDING ALL)"); err != nil {
		return nil, err
	}
	plainInsert := "INSERT INTO " + plain + " (partition, key, topic, message_id, payload, metadata) VALUES ($1, $2, $3, $4, $5, '{}')"
	wcfg := cfg
	wcfg.DisableNotify = os.Getenv("BENCH_NO_NOTIFY") != ""
	if v := os.Getenv("BENCH_NOTIFY_INTERVAL"); v != "" {
		wcfg.NotifyInterval, _ = time.ParseDuration(v)
	}
	w := engine.NewWriter(wcfg)
	payload := []byte(`{"order_id":1,"amount_cents":4200}`)
	// variant: 0 no outbox, 1 Writer.Write (its own statement), 2 QueueWrite
	// (the outbox INSERT pipelined with the business INSERT in one batch),
	// 3 the record's bytes into the plain table in the same batch (the
	// floor: the row without the outbox).
	round := func(variant int) (float64, error) {
		var n atomic.Int64
		var firstErr atomic.Value
		rctx, cancel := context.WithTimeout(ctx, o.duration)
		defer cancel()
		var wg sync.WaitGroup
		for c := range o.clients {
			wg.Go(func() {
				for i := 0; rctx.Err() == nil; i++ {
					err := pgx.BeginFunc(rctx, pool, func(tx pgx.Tx) error {
						cust := "customer-" + strconv.Itoa(c*100000+i%1000)
						rec := engine.Record{Topic: "orders.created", Key: cust, Payload: payload}
						if variant >= 2 {
							b := &pgx.Batch{}
							b.Queue("INSERT INTO "+orders+" (customer, amount) VALUES ($1, $2)", cust, 4200)
							if variant == 2 {
								if err := w.QueueWrite(rctx, tx, b, rec); err != nil {
									return err
								}
							} else {
								b.Queue(plainInsert, engine.Partition(cust, cfg.Partitions), cust, rec.Topic, uuid.Must(uuid.NewV7()).String(), payload)
							}
							return tx.SendBatch(rctx, b).Close()
						}
						if _, err := tx.Exec(rctx, "INSERT INTO "+orders+" (customer, amount) VALUES ($1, $2)", cust, 4200); err != nil {
							return err
						}
						if variant == 1 {
							return w.Write(rctx, tx, rec)
						}
						return nil
					})
					if err != nil {
						if rctx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
						}
						return
					}
					n.Add(1)
				}
			})
		}
		start := time.Now()
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			return 0, err
		}
		return float64(n.Load()) / time.Since(start).Seconds(), nil
	}
	rounds := max(o.rounds, 3)
	var tps [4][]float64 // per variant, one value per round
	for r := range rounds {
		// The variants' order turns every round, so that none always runs
		// first (or right after another).
		for k := range 4 {
			v := (r + k) % 4
			x, err := round(v)
			if err != nil {
				return nil, err
			}
			tps[v] = append(tps[v], x)
		}
		fmt.Fprintf(out, "  round %d: %8.0f tx/s without outbox, %8.0f with Write, %8.0f with QueueWrite (pipelined), %8.0f with the row in a plain table (pipelined)\n",
			r+1, tps[0][r], tps[1][r], tps[2][r], tps[3][r])
	}
	without, with, piped, plainRow := median(tps[0]), median(tps[1]), median(tps[2]), median(tps[3])
	res := &WriteResult{
		Scenario: "write", Clients: o.clients, RoundsEachVariant: rounds, SecondsEachVariant: o.duration.Seconds(),
		TxPerSecWithout: without,
		TxPerSecWith:    with, OverheadPct: (without - with) / without * 100,
		TxPerSecPipelined: piped, PipelinedOverheadPct: (without - piped) / without * 100,
		TxPerSecPlainRow: plainRow, PlainRowOverheadPct: (without - plainRow) / without * 100,
		PipelinedVsPlainRowPct: (plainRow - piped) / plainRow * 100,
	}
	fmt.Fprintf(out, "medians of %d rounds:\n%-48s %8.0f tx/s\n%-48s %8.0f tx/s (%+.1f %%)\n%-48s %8.0f tx/s (%+.1f %%; %+.1f %% against the plain row)\n%-48s %8.0f tx/s (%+.1f %%)\n",
		rounds, "business tx (one INSERT)", without,
		"  + one outbox record, Writer.Write", with, -res.OverheadPct,
		"  + one outbox record, QueueWrite in the batch", piped, -res.PipelinedOverheadPct, -res.PipelinedVsPlainRowPct,
		"  + the record's bytes into a plain table (batch)", plainRow, -res.PlainRowOverheadPct)

	bulk, err := bulkWrite(ctx, pool, w, o.duration, payload)
	if err != nil {
		return nil, err
	}
	res.BulkBatch, res.BulkRecordsPerSec = 10000, bulk
	fmt.Fprintf(out, "%-40s %8.0f records/s\n", "bulk Write, 10,000 records per tx", bulk)
	res.Catalogs = o.catalogs
	if res.CommitCost, err = commitCost(ctx, o, out); err != nil {
		return nil, err
	}
	if bs, _ := parseBaselines(o.baseline); slices.Contains(bs, sysRiver) && len(res.CommitCost) > 0 {
		rc := o.river
		res.River = &rc
	}
	return res, nil
}

func bulkWrite(ctx context.Context, pool *pgxpool.Pool, w *engine.Writer, d time.Duration, payload []byte) (float64, error) {
	recs := make([]engine.Record, 10000)
	for i := range recs {
		recs[i] = engine.Record{Topic: "orders.created", Key: "customer-" + strconv.Itoa(i%1000), Payload: payload}
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return w.Write(ctx, tx, recs...) })
		if err != nil {
			return 0, err
		}
		n += len(recs)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
