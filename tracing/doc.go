// Package tracing is postrelay's OpenTelemetry instrumentation: an
// engine.Observer that creates a span per delivery attempt, carries trace
// context from the writer through the relay to the consumer, and records the
// postrelay metrics.
//
//	obs, err := tracing.New(tracing.Config{
//		Stats: engine.NewAdmin(pool, cfg).Status, // optional: backlog gauges
//	}) // nil providers: the global ones
//	if err != nil { … }
//	defer obs.Close()
//	cfg.Observer = obs // the same engine.Config for the Writer and the Engine
//
// With no Observer the engine makes none of these calls and pays nothing.
// With a noop TracerProvider (go.opentelemetry.io/otel/trace/noop) spans are
// off: StartAttempt returns at once without allocating, the message keeps
// the writer's stored trace context, and only the metrics are recorded.
// InjectWrite still stores the writer's span context, which belongs to the
// application, for a relay elsewhere that has spans on.
//
// # Spans
//
// Each delivery attempt — delivered, failed and retried later, or
// dead-lettered — is one span named "publish <topic>", kind PRODUCER, from
// the moment the message is handed to the publisher until Publish returns.
// Its attributes follow the OpenTelemetry messaging semantic conventions:
//
//	messaging.system            Config.System ("watermill" by default; "kafka", "rabbitmq", …)
//	messaging.operation.type    "send"
//	messaging.operation.name    "publish"
//	messaging.destination.name  the record's topic
//	messaging.message.id        the message UUID (stable across attempts)
//	messaging.message.body.size the payload size in bytes
//
// and postrelay's own:
//
//	postrelay.partition  the record's partition
//	postrelay.attempt    1 for the first attempt
//	postrelay.record_id  the record's id in its schema
//	postrelay.key        the record's key
//	postrelay.outcome    "delivered", "retry" or "dead_lettered"
//
// A failed attempt also has error.type, an "exception" event with the error,
// and status Error with the error text as description. The attributes are
// set when the attempt ends, all at once (it is cheaper): a sampler sees the
// span's name, which carries the topic, its kind and its parent.
//
// # Propagation: the delivery span is a child of the writer's span
//
// Writer.Write calls InjectWrite: the span context in the writer's ctx is
// stored in the record's metadata as W3C traceparent and tracestate (and
// baggage), in the same transaction as the business rows. A writer without a
// span stores nothing.
//
// StartAttempt extracts that context and starts the attempt's span as its
// CHILD, not as a new trace with a link. The record is the writer's
// outgoing message: the relay is a deferred step of the writer's operation,
// so operators get one trace that reads writer → relay → consumer, with
// every retry a sibling attempt under the write, and a trace-id search for
// the request that wrote the record finds its delivery. The sampling
// decision follows: with a parent-based sampler, a sampled write has sampled
// deliveries. The price is that a trace can stay open for as long as the
// record waits (DeliverAfter, a broker outage, a long backlog); trace
// backends show such gaps plainly, and the postrelay.delivery.lag histogram
// measures them. A link would hide the causal chain in the common case to
// tidy up the rare one. A record written without a span gets a root span.
//
// The outgoing message's metadata then carries the DELIVERY span's
// traceparent, replacing the stored one, so a consumer that extracts it
// (propagation.TraceContext on msg.Metadata, or a Watermill tracing
// middleware) starts its span as a child of the attempt that delivered the
// message, in the same trace. When the relay's sampler drops the attempt's
// span, the message keeps the writer's context instead: the consumer still
// joins the writer's trace.
//
// # Metrics
//
// Labels are low-cardinality: "topic" on record metrics, nothing else. Keys
// and record ids appear on spans only. OpenTelemetry names and their
// Prometheus names as `postrelay run --metrics-addr` serves them (the
// exporter turns dots into underscores, appends the unit — "s" becomes
// _seconds, units in braces are dropped — and _total to counters):
//
//	postrelay.records.delivered      counter {record}, topic → postrelay_records_delivered_total
//	    Records published and whose completion committed.
//	postrelay.delivery.failures      counter {attempt}, topic → postrelay_delivery_failures_total
//	    Failed publish attempts that will be retried. An attempt that
//	    dead-letters counts in postrelay.records.dead_lettered instead, so all
//	    failed attempts = failures + dead_lettered.
//	postrelay.records.dead_lettered  counter {record}, topic → postrelay_records_dead_lettered_total
//	    Records moved to the dead letters.
//	postrelay.delivery.duration      histogram s, topic → postrelay_delivery_duration_seconds
//	    One Publish call, successful or not (buckets 0.5ms … 30s).
//	postrelay.delivery.lag           histogram s, topic → postrelay_delivery_lag_seconds
//	    From the record's write (database clock) to its successful publish
//	    (buckets 1ms … 1h).
//	postrelay.partitions.owned       up-down counter {partition} → postrelay_partitions_owned
//	    Leases this instance holds: +1 acquired, −1 released or lost.
//	postrelay.instances.live         gauge {instance} → postrelay_instances_live
//	    Live instances, as this instance last saw them.
//	postrelay.lease.acquisitions     counter {lease} → postrelay_lease_acquisitions_total
//	postrelay.lease.losses           counter {lease} → postrelay_lease_losses_total
//	    Leases lost to a takeover or expiry (not releases).
//	postrelay.actor.restarts         counter {restart} → postrelay_actor_restarts_total
//	    Supervised actors restarted after a failure.
//	postrelay.backlog.records        gauge {record} → postrelay_backlog_records
//	postrelay.backlog.oldest_age     gauge s → postrelay_backlog_oldest_age_seconds
//	postrelay.dead_letters           gauge {record} → postrelay_dead_letters
//	    The last three only with Config.Stats: pending records, age of the
//	    oldest one, and dead letters, for the whole schema. Stats is called
//	    from metric collection at most once per StatsInterval (5s), never
//	    twice at once; a failure is logged and reports no value.
//
// The Prometheus exporter adds otel_scope_name (and the other scope labels);
// Prometheus adds job and instance.
//
// # Grafana dashboard
//
// examples/grafana/postrelay-dashboard.json (import it, pick the Prometheus
// data source) has these panels:
//
//   - Delivered records/s by topic: rate of postrelay_records_delivered_total,
//     summed over instances. The throughput of the relay.
//   - Failed attempts and dead letters/s by topic: rates of
//     postrelay_delivery_failures_total and
//     postrelay_records_dead_lettered_total. Failures with no dead letters
//     are retries that recover; dead letters need a human.
//   - Failed attempt ratio: failed attempts (retried or dead-lettered) over
//     all attempts. A sick broker shows here first.
//   - Commit-to-publish lag (p50/p99): quantiles of
//     postrelay_delivery_lag_seconds; the delay the outbox adds end to end.
//   - Publish duration (p50/p99): quantiles of
//     postrelay_delivery_duration_seconds; the broker's round trip.
//   - Backlog: postrelay_backlog_records (max over instances, which all
//     report the same table). Should stay near zero.
//   - Oldest pending record: postrelay_backlog_oldest_age_seconds. A line
//     that climbs steadily means delivery is stuck.
//   - Dead letters: postrelay_dead_letters, red from 1.
//   - Partitions owned by instance: postrelay_partitions_owned per instance;
//     it should be balanced and sum to the partition count.
//   - Live instances: postrelay_instances_live.
//   - Lease acquisitions and losses: increases of
//     postrelay_lease_acquisitions_total and postrelay_lease_losses_total
//     over 5 minutes. Acquisitions follow joins, leaves and restarts; losses
//     mean an instance stalled past the lease TTL.
//   - Actor restarts: increase of postrelay_actor_restarts_total per
//     instance; anything above zero deserves a look at the logs.
package tracing
