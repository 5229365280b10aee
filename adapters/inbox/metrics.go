package inbox

import (
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names (OpenTelemetry); each has one attribute, consumer.
const (
	MetricProcessed  = "postrelay.inbox.processed"
	MetricDuplicates = "postrelay.inbox.duplicates_suppressed"
	MetricPurged     = "postrelay.inbox.purged"
	MetricRejected   = "postrelay.inbox.rejected"
)

// ScopeName is the instrumentation scope of the inbox's meter.
const ScopeName = "github.com/postrelay/postrelay/adapters/inbox"

type instruments struct {
	processed, duplicates, purged, rejected metric.Int64Counter
	attrs                                   metric.MeasurementOption
}

func newInstruments(cfg Config) (*instruments, error) {
	m := cfg.MeterProvider.Meter(ScopeName)
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	in := &instruments{
		processed:  counter(MetricProcessed, "{message}", "Messages applied and committed by the inbox."),
		duplicates: counter(MetricDuplicates, "{message}", "Redelivered messages the inbox acked without applying them again."),
		purged:     counter(MetricPurged, "{message}", "Processed message ids deleted after the retention window."),
		rejected:   counter(MetricRejected, "{message}", "Messages without a deduplication key dropped by MissingKeyDrop."),
		attrs:      metric.WithAttributeSet(attribute.NewSet(attribute.String("consumer", cfg.Consumer))),
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return in, nil
}
