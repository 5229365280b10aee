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
	"go.opentelemetry.io/otel/trace/embedded"
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

// W3C Trace Context and Baggage metadata keys.
const (
	traceparent = "traceparent"
	tracestate  = "tracestate"
	baggageKey  = "baggage"
)

// Observer implements engine.Observer with OpenTelemetry: a producer span
// per delivery attempt, trace context carried from the writer to the
// consumer, and the postrelay metrics. Create it with New; it is safe for
// concurrent use. Set it as engine.Config.Observer for both the Writer and
// the Engine.
type Observer struct {
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	spansOff bool               // a noop TracerProvider: StartAttempt does nothing
	w3c      bool               // the default propagator: StartAttempt parses and formats traceparent itself
	system   attribute.KeyValue // messaging.system

	topicsMu sync.Mutex                             // serialises writers of topics
	topics   atomic.Pointer[map[string]*topicAttrs] // copy-on-write, read without locks

	instruments
}

var _ engine.Observer = (*Observer)(nil)

// New validates cfg (after WithDefaults) and returns an Observer with its
// instruments registered on cfg.MeterProvider.
func New(cfg Config) (*Observer, error) {
	w3c := cfg.Propagator == nil
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &Observer{
		tracer:   cfg.TracerProvider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:     cfg.Propagator,
		spansOff: isNoop(cfg.TracerProvider),
		w3c:      w3c,
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

// topicAttrs are the per-topic values computed once: the span name, start
// options and span attributes, and the metric attribute set.
type topicAttrs struct {
	spanName  string
	startOpts []trace.SpanStartOption // child of the writer's span
	rootOpts  []trace.SpanStartOption // untraced writer: a new root
	static    [4]attribute.KeyValue   // system, operation type and name, destination
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
	ta := &topicAttrs{
		spanName:  "publish " + t,
		startOpts: []trace.SpanStartOption{kindOpt},
		rootOpts:  []trace.SpanStartOption{kindOpt, trace.WithNewRoot()},
		static:    [4]attribute.KeyValue{o.system, opType, opName, semconv.MessagingDestinationName(t)},
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

// noFinish is the AttemptFinisher of an attempt without a recording span.
type noFinish struct{}

func (noFinish) FinishAttempt(engine.AttemptResult) {}

// StartAttempt starts the attempt's span, kind PRODUCER, as a child of the
// writer's span context stored in the record's metadata (a new root when the
// writer was not traced), and writes the span's context into the outgoing
// message's metadata, replacing the stored one, so the consumer's span joins
// the trace under this attempt. The returned AttemptFinisher ends the span
// with the outcome.
//
// With the default propagator (W3C Trace Context and Baggage) the stored
// traceparent is parsed and the outgoing one formatted directly; the whole
// attempt allocates one attemptSpan besides what the TracerProvider
// allocates for the span.
func (o *Observer) StartAttempt(ctx context.Context, a engine.Attempt, msg *message.Message) (context.Context, engine.AttemptFinisher) {
	if o.spansOff {
		return ctx, noFinish{}
	}
	if !o.w3c {
		return o.startAttemptPropagator(ctx, a, msg)
	}
	ta := o.topic(a.Topic)
	var (
		st     *attemptSpan
		parent *remoteParent
	)
	opts := ta.startOpts
	if tp, ok := a.Metadata[traceparent]; ok {
		if sc, ok := parseTraceparent(tp); ok {
			if ts, ok := a.Metadata[tracestate]; ok {
				// Rare; an invalid tracestate is dropped, as the
				// propagator does, and the traceparent still counts.
				state, _ := trace.ParseTraceState(ts)
				sc = sc.WithTraceState(state)
			}
			if sc.IsSampled() {
				// Likely recorded: the parent lives in the attempt's state.
				st = &attemptSpan{}
				parent = &st.parent
			} else {
				// Likely sampled out (ParentBased): a small parent alone.
				parent = &remoteParent{}
			}
			parent.sc = sc
			ctx = trace.ContextWithSpan(ctx, parent)
		}
	}
	if parent == nil && trace.SpanContextFromContext(ctx).IsValid() {
		// An untraced record's span is a root even when the engine runs
		// under a span. (WithNewRoot costs two allocations: only here.)
		opts = ta.rootOpts
	}
	if _, ok := a.Metadata[baggageKey]; ok {
		ctx = propagation.Baggage{}.Extract(ctx, propagation.MapCarrier(a.Metadata))
	}
	ctx, span := o.tracer.Start(ctx, ta.spanName, opts...)
	if !span.IsRecording() {
		// Sampled out: the message keeps the writer's context (if any), so a
		// consumer still joins the writer's trace and its sampling decision.
		span.End()
		return ctx, noFinish{}
	}
	if st == nil {
		st = &attemptSpan{}
	}
	st.span = span
	st.setRecordAttrs(ta, a, msg)
	if msg.Metadata == nil {
		msg.Metadata = message.Metadata{}
	}
	sc := span.SpanContext()
	msg.Metadata[traceparent] = formatTraceparent(sc)
	if ts := sc.TraceState(); ts.Len() > 0 {
		msg.Metadata[tracestate] = ts.String()
	}
	return ctx, st
}

// startAttemptPropagator is StartAttempt with a Config.Propagator of the
// application's: the stored context is extracted and the span's injected
// through it.
func (o *Observer) startAttemptPropagator(ctx context.Context, a engine.Attempt, msg *message.Message) (context.Context, engine.AttemptFinisher) {
	ta := o.topic(a.Topic)
	opts := ta.rootOpts
	if len(a.Metadata) > 0 {
		before := trace.SpanContextFromContext(ctx)
		ctx = o.prop.Extract(ctx, propagation.MapCarrier(a.Metadata))
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && !sc.Equal(before) {
			opts = ta.startOpts
		}
	}
	ctx, span := o.tracer.Start(ctx, ta.spanName, opts...)
	if !span.IsRecording() {
		span.End()
		return ctx, noFinish{}
	}
	st := &attemptSpan{span: span}
	st.setRecordAttrs(ta, a, msg)
	if msg.Metadata == nil {
		msg.Metadata = message.Metadata{}
	}
	o.prop.Inject(ctx, propagation.MapCarrier(msg.Metadata))
	return ctx, st
}

// Number of attributes set when the attempt ends: the per-topic and
// per-record ones, postrelay.outcome, and error.type for a failure.
const (
	recordAttrs  = 10
	attemptAttrs = recordAttrs + 2
)

// attemptSpan is the state of one attempt with a recording span, in one
// allocation: the writer's span context as the parent span in the context
// the span starts from (when the writer's span was sampled: an unsampled
// one gets a small remoteParent of its own, as the attempt is then likely
// sampled out), the span, and the attributes set when it ends.
//
// All the span's attributes are set when it ends, with the outcome, in a
// single SetAttributes call from this array: the SDK then grows the span's
// attribute slice once, and the variadic argument needs no allocation of its
// own. Giving the four per-topic ones (system, operation, destination) at
// start, where the messaging conventions suggest samplers see them, cost two
// more allocations per attempt; a sampler sees the span name, "publish
// <topic>", its kind and its parent.
type attemptSpan struct {
	parent remoteParent
	span   trace.Span
	attrs  [attemptAttrs]attribute.KeyValue
}

var _ engine.AttemptFinisher = (*attemptSpan)(nil)

func (st *attemptSpan) setRecordAttrs(ta *topicAttrs, a engine.Attempt, msg *message.Message) {
	copy(st.attrs[:4], ta.static[:])
	st.attrs[4] = semconv.MessagingMessageID(a.MessageID)
	st.attrs[5] = semconv.MessagingMessageBodySize(len(msg.Payload))
	st.attrs[6] = AttrPartition.Int(a.Partition)
	st.attrs[7] = AttrAttempt.Int(a.Attempt)
	st.attrs[8] = AttrRecordID.Int64(a.RecordID)
	st.attrs[9] = AttrKey.String(a.Key)
}

// FinishAttempt ends the span with the attempt's outcome.
func (st *attemptSpan) FinishAttempt(r engine.AttemptResult) {
	n := recordAttrs
	if int(r.Outcome) < len(outcomeAttr) && outcomeAttr[r.Outcome].Key != "" {
		st.attrs[n] = outcomeAttr[r.Outcome]
	} else {
		st.attrs[n] = outcomeUnknown
	}
	n++
	if r.Err != nil {
		st.attrs[n] = semconv.ErrorType(r.Err)
		n++
	}
	span := st.span
	span.SetAttributes(st.attrs[:n]...)
	if r.Err != nil {
		span.RecordError(r.Err)
		span.SetStatus(codes.Error, r.Err.Error())
	} else if r.Outcome != engine.OutcomeDelivered {
		span.SetStatus(codes.Error, r.Outcome.String())
	}
	span.End()
}

// remoteParent is the writer's span context as a non-recording span: what
// trace.ContextWithRemoteSpanContext stores, but inside attemptSpan rather
// than in an allocation of its own.
type remoteParent struct {
	embedded.Span
	sc trace.SpanContext
}

var _ trace.Span = (*remoteParent)(nil)

func (p *remoteParent) SpanContext() trace.SpanContext          { return p.sc }
func (p *remoteParent) IsRecording() bool                       { return false }
func (p *remoteParent) End(...trace.SpanEndOption)              {}
func (p *remoteParent) AddEvent(string, ...trace.EventOption)   {}
func (p *remoteParent) AddLink(trace.Link)                      {}
func (p *remoteParent) RecordError(error, ...trace.EventOption) {}
func (p *remoteParent) SetStatus(codes.Code, string)            {}
func (p *remoteParent) SetName(string)                          {}
func (p *remoteParent) SetAttributes(...attribute.KeyValue)     {}
func (p *remoteParent) TracerProvider() trace.TracerProvider    { return noop.NewTracerProvider() }
