package tracing

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/postrelay/postrelay/engine"
)

// ScopeName is the instrumentation scope of postrelay's tracer and meter.
const ScopeName = "github.com/postrelay/postrelay"

// Span attribute keys of postrelay's own (the messaging.* ones come from the
// OpenTelemetry semantic conventions).
const (
	AttrPartition = attribute.Key("postrelay.partition")
	AttrAttempt   = attribute.Key("postrelay.attempt")
	AttrRecordID  = attribute.Key("postrelay.record_id")
	AttrKey       = attribute.Key("postrelay.key")
	AttrOutcome   = attribute.Key("postrelay.outcome")
)

// traceparent is the W3C header whose presence says the writer was traced.
const traceparent = "traceparent"

// Observer implements engine.Observer with OpenTelemetry: a producer span
// per delivery attempt, trace context carried from the writer to the
// consumer, and the postrelay metrics. Create it with New; it is safe for
// concurrent use. Set it as engine.Config.Observer for both the Writer and
// the Engine.
type Observer struct {
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	spansOff bool               // a noop TracerProvider: StartAttempt does nothing
	system   attribute.KeyValue // messaging.system

	topicsMu sync.Mutex                             // serialises writers of topics
	topics   atomic.Pointer[map[string]*topicAttrs] // copy-on-write, read without locks

	instruments
}

var _ engine.Observer = (*Observer)(nil)

// New validates cfg (after WithDefaults) and returns an Observer with its
// instruments registered on cfg.MeterProvider.
func New(cfg Config) (*Observer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &Observer{
		tracer:   cfg.TracerProvider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:     cfg.Propagator,
		spansOff: isNoop(cfg.TracerProvider),
		system:   semconv.MessagingSystemKey.String(cfg.System),
	}
	o.topics.Store(&map[string]*topicAttrs{})
	if err := o.instruments.init(cfg, cfg.MeterProvider.Meter(ScopeName)); err != nil {
		return nil, err
	}
	return o, nil
}

// Close unregisters the Observer's metric callbacks (instances and backlog
// gauges), so a Stats function that uses a closed pool is no longer called.
// Counters and histograms stay with the MeterProvider. Close is idempotent.
func (o *Observer) Close() error { return o.instruments.close() }

func isNoop(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		return true
	}
	return false
}

// topicAttrs are the per-topic values computed once: the span name and
// start options (with the sampling-relevant attributes), and the metric
// attribute set.
type topicAttrs struct {
	spanName  string
	startOpts []trace.SpanStartOption // child of the writer's span
	rootOpts  []trace.SpanStartOption // untraced writer: a new root
	add       []metric.AddOption
	rec       []metric.RecordOption
}

// topicCacheMax bounds the per-topic cache; further topics are computed per
// call (topics are expected to be few: they are metric labels too).
const topicCacheMax = 1024

func (o *Observer) topic(t string) *topicAttrs {
	if ta, ok := (*o.topics.Load())[t]; ok {
		return ta
	}
	set := metric.WithAttributeSet(attribute.NewSet(attribute.String("topic", t)))
	// The attributes the messaging conventions mark as relevant for
	// sampling, given at start; the per-record ones are set only on spans
	// that record.
	attrs := trace.WithAttributes(o.system, opType, opName, semconv.MessagingDestinationName(t))
	ta := &topicAttrs{
		spanName:  "publish " + t,
		startOpts: []trace.SpanStartOption{kindOpt, attrs},
		rootOpts:  []trace.SpanStartOption{kindOpt, trace.WithNewRoot(), attrs},
		add:       []metric.AddOption{set},
		rec:       []metric.RecordOption{set},
	}
	o.topicsMu.Lock()
	defer o.topicsMu.Unlock()
	old := *o.topics.Load()
	if cur, ok := old[t]; ok {
		return cur
	}
	if len(old) >= topicCacheMax {
		return ta
	}
	m := make(map[string]*topicAttrs, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[t] = ta
	o.topics.Store(&m)
	return ta
}

// InjectWrite stores the writer's span context in the record's metadata as
// W3C traceparent/tracestate (and baggage). A writer without a valid span
// context stores nothing. It does so even when this Observer's spans are off:
// the span context is the application's, and the relay that delivers the
// record may be another process with tracing on.
func (o *Observer) InjectWrite(ctx context.Context, md map[string]string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	o.prop.Inject(ctx, propagation.MapCarrier(md))
}

// Attributes shared by every span, and the start options that never change.
var (
	opType      = semconv.MessagingOperationTypeSend
	opName      = semconv.MessagingOperationName("publish")
	kindOpt     = trace.WithSpanKind(trace.SpanKindProducer)
	outcomeAttr = [...]attribute.KeyValue{
		engine.OutcomeDelivered:    AttrOutcome.String(engine.OutcomeDelivered.String()),
		engine.OutcomeRetry:        AttrOutcome.String(engine.OutcomeRetry.String()),
		engine.OutcomeDeadLettered: AttrOutcome.String(engine.OutcomeDeadLettered.String()),
	}
	outcomeUnknown = AttrOutcome.String("unknown")
)

func noFinish(engine.AttemptResult) {}

// StartAttempt starts the attempt's span, kind PRODUCER, as a child of the
// writer's span context stored in the record's metadata (a new root when the
// writer was not traced), and writes the span's context into the outgoing
// message's metadata, replacing the stored one, so the consumer's span joins
// the trace under this attempt. The returned function ends the span with the
// outcome.
func (o *Observer) StartAttempt(ctx context.Context, a engine.Attempt, msg *message.Message) (context.Context, func(engine.AttemptResult)) {
	if o.spansOff {
		return ctx, noFinish
	}
	ta := o.topic(a.Topic)
	parent, opts := ctx, ta.rootOpts
	if _, ok := a.Metadata[traceparent]; ok {
		parent, opts = o.prop.Extract(ctx, propagation.MapCarrier(a.Metadata)), ta.startOpts
	}
	ctx, span := o.tracer.Start(parent, ta.spanName, opts...)
	if !span.IsRecording() {
		// Sampled out: the message keeps the writer's context (if any), so a
		// consumer still joins the writer's trace and its sampling decision.
		span.End()
		return ctx, noFinish
	}
	span.SetAttributes(
		semconv.MessagingMessageID(a.MessageID),
		semconv.MessagingMessageBodySize(len(msg.Payload)),
		AttrPartition.Int(a.Partition),
		AttrAttempt.Int(a.Attempt),
		AttrRecordID.Int64(a.RecordID),
		AttrKey.String(a.Key),
	)
	if msg.Metadata == nil {
		msg.Metadata = message.Metadata{}
	}
	o.prop.Inject(ctx, propagation.MapCarrier(msg.Metadata))
	return ctx, func(r engine.AttemptResult) { endAttempt(span, r) }
}

func endAttempt(span trace.Span, r engine.AttemptResult) {
	if int(r.Outcome) < len(outcomeAttr) && outcomeAttr[r.Outcome].Key != "" {
		span.SetAttributes(outcomeAttr[r.Outcome])
	} else {
		span.SetAttributes(outcomeUnknown)
	}
	if r.Err != nil {
		span.SetAttributes(semconv.ErrorType(r.Err))
		span.RecordError(r.Err)
		span.SetStatus(codes.Error, r.Err.Error())
	} else if r.Outcome != engine.OutcomeDelivered {
		span.SetStatus(codes.Error, r.Outcome.String())
	}
	span.End()
}
