package tracing

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/postrelay/postrelay/engine"
)

// ScopeName is the instrumentation scope of postrelay's tracer and meter.
const ScopeName = "github.com/postrelay/postrelay"

// Config configures the Observer. The zero value uses the global providers.
type Config struct {
	// TracerProvider creates the delivery spans. nil means the global one
	// (otel.GetTracerProvider). Defaults to nil.
	TracerProvider trace.TracerProvider
	// MeterProvider creates the metrics. nil means the global one
	// (otel.GetMeterProvider). Defaults to nil.
	MeterProvider metric.MeterProvider
	// Propagator writes and reads trace context in record and message
	// metadata. Defaults to W3C Trace Context with Baggage.
	Propagator propagation.TextMapPropagator
	// System is the messaging.system attribute of delivery spans, such as
	// "rabbitmq" or "kafka". Defaults to "watermill".
	System string
	// Stats, when set, feeds the backlog gauges; it is called at most once
	// per StatsInterval (engine.NewAdmin(pool, cfg).Status fits).
	Stats func(ctx context.Context) (engine.Status, error)
	// StatsInterval caches Stats results. Defaults to 5s.
	StatsInterval time.Duration
}

// Observer implements engine.Observer with OpenTelemetry: a producer span
// per delivery attempt and the postrelay metrics.
type Observer struct {
	cfg    Config
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	system attribute.KeyValue

	delivered, failures, deadLettered, leaseAcquired, leaseLost metric.Int64Counter
	owned                                                       metric.Int64UpDownCounter
	duration, lag                                               metric.Float64Histogram

	topics sync.Map // topic → metric.MeasurementOption (cached attribute set)

	mu        sync.Mutex
	live      int64
	stats     engine.Status
	statsAt   time.Time
	statsErr  error
	statsBusy bool
}

var _ engine.Observer = (*Observer)(nil)

// New returns an Observer with its instruments registered.
func New(cfg Config) (*Observer, error) {
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if cfg.System == "" {
		cfg.System = "watermill"
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = 5 * time.Second
	}
	o := &Observer{
		cfg:    cfg,
		tracer: cfg.TracerProvider.Tracer(ScopeName),
		prop:   cfg.Propagator,
		system: attribute.String("messaging.system", cfg.System),
	}
	m := cfg.MeterProvider.Meter(ScopeName)
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{record}"))
		errs = append(errs, err)
		return c
	}
	o.delivered = counter("postrelay.records.delivered", "Records published and completed.")
	o.failures = counter("postrelay.delivery.failures", "Failed delivery attempts that will be retried.")
	o.deadLettered = counter("postrelay.records.dead_lettered", "Records moved to the dead letters.")
	var err error
	o.leaseAcquired, err = m.Int64Counter("postrelay.lease.acquisitions", metric.WithDescription("Partition leases acquired."), metric.WithUnit("{lease}"))
	errs = append(errs, err)
	o.leaseLost, err = m.Int64Counter("postrelay.lease.losses", metric.WithDescription("Partition leases lost (taken over or expired)."), metric.WithUnit("{lease}"))
	errs = append(errs, err)
	o.owned, err = m.Int64UpDownCounter("postrelay.partitions.owned", metric.WithDescription("Partitions this instance holds."), metric.WithUnit("{partition}"))
	errs = append(errs, err)
	buckets := metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
	o.duration, err = m.Float64Histogram("postrelay.delivery.duration", metric.WithDescription("Duration of one Publish call."), metric.WithUnit("s"), buckets)
	errs = append(errs, err)
	o.lag, err = m.Float64Histogram("postrelay.delivery.lag", metric.WithDescription("Time from a record's write (database clock) to its publish."), metric.WithUnit("s"), buckets)
	errs = append(errs, err)
	live, err := m.Int64ObservableGauge("postrelay.instances.live", metric.WithDescription("Live relay instances seen by this one."), metric.WithUnit("{instance}"))
	errs = append(errs, err)
	_, err = m.RegisterCallback(func(_ context.Context, ob metric.Observer) error {
		o.mu.Lock()
		defer o.mu.Unlock()
		ob.ObserveInt64(live, o.live)
		return nil
	}, live)
	errs = append(errs, err)
	if cfg.Stats != nil {
		backlog, err := m.Int64ObservableGauge("postrelay.backlog.records", metric.WithDescription("Pending records in the outbox."), metric.WithUnit("{record}"))
		errs = append(errs, err)
		oldest, err := m.Float64ObservableGauge("postrelay.backlog.oldest_age", metric.WithDescription("Age of the oldest pending record."), metric.WithUnit("s"))
		errs = append(errs, err)
		dead, err := m.Int64ObservableGauge("postrelay.dead_letters", metric.WithDescription("Records in the dead letters."), metric.WithUnit("{record}"))
		errs = append(errs, err)
		_, err = m.RegisterCallback(func(ctx context.Context, ob metric.Observer) error {
			st, err := o.status(ctx)
			if err != nil {
				return nil // keep the last good values out rather than fail the collection
			}
			ob.ObserveInt64(backlog, st.Pending)
			ob.ObserveFloat64(oldest, st.OldestPendingAge.Seconds())
			ob.ObserveInt64(dead, st.DeadLetters)
			return nil
		}, backlog, oldest, dead)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *Observer) status(ctx context.Context) (engine.Status, error) {
	o.mu.Lock()
	if time.Since(o.statsAt) < o.cfg.StatsInterval {
		st, err := o.stats, o.statsErr
		o.mu.Unlock()
		return st, err
	}
	o.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := o.cfg.Stats(ctx)
	o.mu.Lock()
	o.stats, o.statsErr, o.statsAt = st, err, time.Now()
	o.mu.Unlock()
	return st, err
}

func (o *Observer) topic(t string) metric.MeasurementOption {
	if v, ok := o.topics.Load(t); ok {
		return v.(metric.MeasurementOption)
	}
	opt := metric.WithAttributeSet(attribute.NewSet(attribute.String("topic", t)))
	v, _ := o.topics.LoadOrStore(t, opt)
	return v.(metric.MeasurementOption)
}

// InjectWrite stores the writer's trace context in the record's metadata.
func (o *Observer) InjectWrite(ctx context.Context, md map[string]string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	o.prop.Inject(ctx, propagation.MapCarrier(md))
}

// StartAttempt starts the attempt's producer span as a child of the
// writer's span (from the record's metadata), and puts the span's context
// in the outgoing message's metadata so the consumer joins the trace.
func (o *Observer) StartAttempt(ctx context.Context, a engine.Attempt, msg *message.Message) (context.Context, func(engine.AttemptResult)) {
	parent := ctx
	if _, ok := a.Metadata["traceparent"]; ok { // the writer was traced
		parent = o.prop.Extract(ctx, propagation.MapCarrier(a.Metadata))
	}
	ctx, span := o.tracer.Start(parent, "publish "+a.Topic,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			o.system,
			opSend, opPublish,
			attribute.String("messaging.destination.name", a.Topic),
			attribute.String("messaging.message.id", a.MessageID),
			attribute.Int("postrelay.partition", a.Partition),
			attribute.Int("postrelay.attempt", a.Attempt),
			attribute.Int64("postrelay.record_id", a.RecordID),
			attribute.String("postrelay.key", a.Key),
		))
	if !span.IsRecording() {
		return ctx, func(engine.AttemptResult) { span.End() }
	}
	o.prop.Inject(ctx, propagation.MapCarrier(msg.Metadata))
	return ctx, func(r engine.AttemptResult) {
		span.SetAttributes(outcomeAttr[r.Outcome])
		if r.Err != nil {
			span.RecordError(r.Err)
			span.SetStatus(codes.Error, r.Err.Error())
		}
		span.End()
	}
}

var (
	opSend      = attribute.String("messaging.operation.type", "send")
	opPublish   = attribute.String("messaging.operation.name", "publish")
	outcomeAttr = map[engine.AttemptOutcome]attribute.KeyValue{
		engine.OutcomeDelivered:    attribute.String("postrelay.outcome", engine.OutcomeDelivered.String()),
		engine.OutcomeRetry:        attribute.String("postrelay.outcome", engine.OutcomeRetry.String()),
		engine.OutcomeDeadLettered: attribute.String("postrelay.outcome", engine.OutcomeDeadLettered.String()),
	}
)

// ObserveEvent turns engine events into metrics.
func (o *Observer) ObserveEvent(e engine.Event) {
	ctx := context.Background()
	switch e.Kind {
	case engine.EventDelivered:
		t := o.topic(e.Topic)
		o.delivered.Add(ctx, 1, t)
		o.duration.Record(ctx, e.Duration.Seconds(), t)
		o.lag.Record(ctx, e.Lag.Seconds(), t)
	case engine.EventFailed:
		t := o.topic(e.Topic)
		o.failures.Add(ctx, 1, t)
		o.duration.Record(ctx, e.Duration.Seconds(), t)
	case engine.EventDeadLettered:
		t := o.topic(e.Topic)
		o.deadLettered.Add(ctx, 1, t)
	case engine.EventLeaseAcquired:
		o.leaseAcquired.Add(ctx, 1)
		o.owned.Add(ctx, 1)
	case engine.EventLeaseReleased:
		o.owned.Add(ctx, -1)
	case engine.EventLeaseLost:
		o.leaseLost.Add(ctx, 1)
		o.owned.Add(ctx, -1)
	case engine.EventInstancesChanged:
		o.mu.Lock()
		o.live = int64(e.Count)
		o.mu.Unlock()
	}
}
