// Package tracing is postrelay's OpenTelemetry instrumentation: an
// engine.Observer that creates a span per delivery attempt, carries trace
// context from the writer through the relay to the consumer, and records
// the postrelay metrics.
//
//	obs, err := tracing.New(tracing.Config{})   // global providers
//	cfg.Observer = obs                          // engine.Config, for Writer and Engine
//
// # Spans and propagation
//
// The Writer calls InjectWrite: the writer's span context is stored in the
// record's metadata as W3C traceparent (and tracestate, baggage). Each
// delivery attempt — delivered, retry or dead-lettered — is one span named
// "publish <topic>", kind PRODUCER, with the messaging semantic conventions
// (messaging.system, messaging.operation.type "send",
// messaging.operation.name "publish", messaging.destination.name,
// messaging.message.id) and postrelay.partition, postrelay.attempt,
// postrelay.record_id, postrelay.key and postrelay.outcome; a failed attempt
// records the error and has status Error.
//
// The delivery span is a CHILD of the writer's span, not a link: the record
// is the writer's message, and operators want one trace that runs writer →
// relay → consumer, with each retry visible as a sibling attempt under the
// write. (A link would start a new trace per attempt and split that view.)
// The outgoing message's metadata carries the DELIVERY span's traceparent,
// replacing the stored one, so a consumer that extracts it (Watermill's
// tracing middlewares do) continues the same trace under the attempt that
// delivered the message.
//
// With no Observer configured the engine makes none of these calls.
//
// # Metrics
//
// Labels are low-cardinality: "topic" only; keys and record ids go on spans.
// Names (OpenTelemetry → Prometheus, as served by `postrelay run
// --metrics-addr`):
//
//	postrelay.records.delivered     counter {record}, topic → postrelay_records_delivered_total
//	postrelay.delivery.failures     counter {record}, topic → postrelay_delivery_failures_total
//	postrelay.records.dead_lettered counter {record}, topic → postrelay_records_dead_lettered_total
//	postrelay.delivery.duration     histogram s, topic      → postrelay_delivery_duration_seconds
//	postrelay.delivery.lag          histogram s, topic      → postrelay_delivery_lag_seconds (write → publish)
//	postrelay.partitions.owned      up-down counter         → postrelay_partitions_owned
//	postrelay.instances.live        gauge                   → postrelay_instances_live
//	postrelay.lease.acquisitions    counter                 → postrelay_lease_acquisitions_total
//	postrelay.lease.losses          counter                 → postrelay_lease_losses_total
//	postrelay.backlog.records       gauge (with Stats)      → postrelay_backlog_records
//	postrelay.backlog.oldest_age    gauge s (with Stats)    → postrelay_backlog_oldest_age_seconds
//	postrelay.dead_letters          gauge (with Stats)      → postrelay_dead_letters
//
// The Grafana dashboard in examples/grafana uses these Prometheus names; its
// panels are described in the README.
package tracing
