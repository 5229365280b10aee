package tracing

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/postrelay/postrelay/engine"
)

// Metric names (OpenTelemetry). doc.go lists them with their Prometheus
// names, units and labels.
const (
	MetricDelivered     = "postrelay.records.delivered"
	MetricFailures      = "postrelay.delivery.failures"
	MetricDeadLettered  = "postrelay.records.dead_lettered"
	MetricDuration      = "postrelay.delivery.duration"
	MetricLag           = "postrelay.delivery.lag"
	MetricOwned         = "postrelay.partitions.owned"
	MetricInstances     = "postrelay.instances.live"
	MetricLeaseAcquired = "postrelay.lease.acquisitions"
	MetricLeaseLost     = "postrelay.lease.losses"
	MetricRestarts      = "postrelay.actor.restarts"
	MetricBacklog       = "postrelay.backlog.records"
	MetricOldestAge     = "postrelay.backlog.oldest_age"
	MetricDeadLetters   = "postrelay.dead_letters"
)

// Histogram bucket boundaries, in seconds. A publish takes milliseconds; the
// lag grows to minutes or hours during a broker outage.
var (
	durationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	lagBuckets      = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
)

// instruments are the Observer's metric instruments and gauge state.
type instruments struct {
	delivered, failures, deadLettered metric.Int64Counter
	leaseAcquired, leaseLost          metric.Int64Counter
	restarts                          metric.Int64Counter
	owned                             metric.Int64UpDownCounter
	duration, lag                     metric.Float64Histogram

	live atomic.Int64 // live instances; -1 until the first EventInstancesChanged

	stats statsCache

	closeMu sync.Mutex
	regs    []metric.Registration
}

func (in *instruments) init(cfg Config, m metric.Meter) error {
	var errs []error
	check := func(err error) { errs = append(errs, err) }
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return c
	}
	histogram := func(name, desc string, buckets []float64) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(buckets...))
		check(err)
		return h
	}
	in.delivered = counter(MetricDelivered, "{record}", "Records published and completed.")
	in.failures = counter(MetricFailures, "{attempt}", "Failed delivery attempts that will be retried.")
	in.deadLettered = counter(MetricDeadLettered, "{record}", "Records moved to the dead letters.")
	in.leaseAcquired = counter(MetricLeaseAcquired, "{lease}", "Partition leases acquired.")
	in.leaseLost = counter(MetricLeaseLost, "{lease}", "Partition leases lost (taken over or expired), not released.")
	in.restarts = counter(MetricRestarts, "{restart}", "Supervised actors restarted after a failure.")
	in.duration = histogram(MetricDuration, "Duration of one Publish call, successful or not.", durationBuckets)
	in.lag = histogram(MetricLag, "Time from a record's write (database clock) to its successful publish.", lagBuckets)
	var err error
	in.owned, err = m.Int64UpDownCounter(MetricOwned, metric.WithUnit("{partition}"),
		metric.WithDescription("Partitions whose lease this instance holds."))
	check(err)

	in.live.Store(-1)
	live, err := m.Int64ObservableGauge(MetricInstances, metric.WithUnit("{instance}"),
		metric.WithDescription("Live relay instances, as this instance last saw them."))
	check(err)
	if err == nil {
		reg, err := m.RegisterCallback(func(_ context.Context, ob metric.Observer) error {
			if n := in.live.Load(); n >= 0 {
				ob.ObserveInt64(live, n)
			}
			return nil
		}, live)
		check(err)
		if reg != nil {
			in.regs = append(in.regs, reg)
		}
	}

	if cfg.Stats != nil {
		in.stats = statsCache{fn: cfg.Stats, interval: cfg.StatsInterval, timeout: cfg.StatsTimeout, log: cfg.Logger, now: time.Now}
		backlog, err1 := m.Int64ObservableGauge(MetricBacklog, metric.WithUnit("{record}"),
			metric.WithDescription("Pending records in the outbox (all partitions)."))
		oldest, err2 := m.Float64ObservableGauge(MetricOldestAge, metric.WithUnit("s"),
			metric.WithDescription("Age of the oldest pending record (database clock)."))
		dead, err3 := m.Int64ObservableGauge(MetricDeadLetters, metric.WithUnit("{record}"),
			metric.WithDescription("Records in the dead letters."))
		check(errors.Join(err1, err2, err3))
		if err1 == nil && err2 == nil && err3 == nil {
			reg, err := m.RegisterCallback(func(ctx context.Context, ob metric.Observer) error {
				st, ok := in.stats.get(ctx)
				if !ok {
					return nil // no value rather than a stale or made-up one
				}
				ob.ObserveInt64(backlog, st.Pending)
				ob.ObserveFloat64(oldest, st.OldestPendingAge.Seconds())
				ob.ObserveInt64(dead, st.DeadLetters)
				return nil
			}, backlog, oldest, dead)
			check(err)
			if reg != nil {
				in.regs = append(in.regs, reg)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		_ = in.close()
		return err
	}
	return nil
}

func (in *instruments) close() error {
	in.closeMu.Lock()
	defer in.closeMu.Unlock()
	var errs []error
	for _, r := range in.regs {
		errs = append(errs, r.Unregister())
	}
	in.regs = nil
	return errors.Join(errs...)
}

// ObserveEvent turns engine events into metrics. Record events are counted
// by topic; keys and record ids are never labels.
func (o *Observer) ObserveEvent(e engine.Event) {
	ctx := context.Background()
	in := &o.instruments
	switch e.Kind {
	case engine.EventDelivered:
		ta := o.topic(e.Topic)
		in.delivered.Add(ctx, 1, ta.add...)
		in.duration.Record(ctx, e.Duration.Seconds(), ta.rec...)
		in.lag.Record(ctx, e.Lag.Seconds(), ta.rec...)
	case engine.EventFailed:
		ta := o.topic(e.Topic)
		in.failures.Add(ctx, 1, ta.add...)
		if e.Duration > 0 { // zero: cancelled before the publish
			in.duration.Record(ctx, e.Duration.Seconds(), ta.rec...)
		}
	case engine.EventDeadLettered:
		ta := o.topic(e.Topic)
		in.deadLettered.Add(ctx, 1, ta.add...)
		if e.Duration > 0 { // zero: dead-lettered without a publish (bad metadata)
			in.duration.Record(ctx, e.Duration.Seconds(), ta.rec...)
		}
	case engine.EventLeaseAcquired:
		in.leaseAcquired.Add(ctx, 1)
		in.owned.Add(ctx, 1)
	case engine.EventLeaseReleased:
		in.owned.Add(ctx, -1)
	case engine.EventLeaseLost:
		in.leaseLost.Add(ctx, 1)
		in.owned.Add(ctx, -1)
	case engine.EventInstancesChanged:
		in.live.Store(int64(e.Count))
	case engine.EventActorRestarted:
		in.restarts.Add(ctx, 1)
	}
}

// statsCache calls Stats at most once per interval and never concurrently;
// a collection that finds a call in flight reuses the last result.
type statsCache struct {
	fn       func(context.Context) (engine.Status, error)
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu   sync.Mutex
	at   time.Time // when the last call finished; zero before the first
	st   engine.Status
	ok   bool // the last call succeeded
	busy bool
}

func (c *statsCache) get(ctx context.Context) (engine.Status, bool) {
	c.mu.Lock()
	if c.busy || (!c.at.IsZero() && c.now().Sub(c.at) < c.interval) {
		st, ok := c.st, c.ok
		c.mu.Unlock()
		return st, ok
	}
	c.busy = true
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	st, err := c.fn(ctx)
	cancel()
	if err != nil {
		c.log.Warn("postrelay: tracing backlog stats failed", "error", err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy = false
	c.at, c.st, c.ok = c.now(), st, err == nil
	return st, c.ok
}
