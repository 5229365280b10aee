package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/tracing"
)

// observabilityShutdownTimeout bounds flushing spans and stopping the
// metrics server when the relay stops.
const observabilityShutdownTimeout = 5 * time.Second

// spanQueueSize is the batch span processor's queue, unless
// OTEL_BSP_MAX_QUEUE_SIZE sets it: about 80 ms of spans at 100,000 delivery
// attempts per second. The SDK's 2048 is 20 ms, and the processor drops the
// spans that do not fit while an export is slow.
const spanQueueSize = 8192

// discardSpans is the exporter of --tracing without --otlp-endpoint.
type discardSpans struct{}

func (discardSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardSpans) Shutdown(context.Context) error                             { return nil }

// setup wires metrics and traces into cfg.Observer and returns the function
// that shuts them down (flushes spans, stops the metrics server); call it
// once, after the engine stopped.
//
//   - --metrics-addr: an OpenTelemetry MeterProvider read by the Prometheus
//     exporter, served on http://ADDR/metrics with the Go runtime and process
//     collectors; the backlog gauges come from engine.Admin.Status (cached).
//   - --otlp-endpoint: an OpenTelemetry TracerProvider exporting over
//     OTLP/gRPC, batched. "host:port" is plaintext; a URL
//     ("https://collector:4317") chooses TLS by its scheme. OTEL_* variables
//     (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, headers) apply.
//   - --tracing: spans are created, batched as for OTLP and dropped by a
//     discarding exporter, to measure what tracing costs the relay (all but
//     the encoding and the network).
//
// With none of them the engine has no Observer and pays nothing.
func (o *observability) setup(ctx context.Context, cfg *engine.Config, pool *pgxpool.Pool, log *slog.Logger) (func(), error) {
	if o.metricsAddr == "" && o.otlpEndpoint == "" && !o.tracing {
		return func() {}, nil
	}
	var (
		shutdowns []func(context.Context) error
		once      sync.Once
	)
	shutdown := func() {
		once.Do(func() {
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), observabilityShutdownTimeout)
			defer cancel()
			for i := len(shutdowns) - 1; i >= 0; i-- {
				if err := shutdowns[i](c); err != nil {
					log.Warn("postrelay: observability shutdown", "error", err)
				}
			}
		})
	}
	fail := func(err error) (func(), error) {
		shutdown()
		return nil, err
	}

	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("postrelay")),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES override
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("postrelay: observability resource: %w", err)
	}

	tcfg := tracing.Config{
		TracerProvider: tracenoop.NewTracerProvider(),
		MeterProvider:  metricnoop.NewMeterProvider(),
		Logger:         log,
	}

	if o.metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return fail(fmt.Errorf("postrelay: prometheus exporter: %w", err))
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
		shutdowns = append(shutdowns, mp.Shutdown)
		tcfg.MeterProvider = mp
		tcfg.Stats = engine.NewAdmin(pool, *cfg).Status

		ln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			return fail(usageError{fmt.Errorf("--metrics-addr %q: %v", o.metricsAddr, err)})
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("postrelay: metrics server", "error", err)
			}
		}()
		shutdowns = append(shutdowns, func(ctx context.Context) error {
			err := srv.Shutdown(ctx)
			<-served
			return err
		})
		log.Info("postrelay: serving Prometheus metrics", "addr", ln.Addr().String(), "path", "/metrics")
	}

	if o.otlpEndpoint != "" || o.tracing {
		opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
		var exp sdktrace.SpanExporter = discardSpans{}
		if o.otlpEndpoint != "" {
			endpoint := otlptracegrpc.WithEndpoint(o.otlpEndpoint)
			grpcOpts := []otlptracegrpc.Option{endpoint, otlptracegrpc.WithInsecure()}
			if strings.Contains(o.otlpEndpoint, "://") {
				grpcOpts = []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(o.otlpEndpoint)}
			}
			otlp, err := otlptracegrpc.New(ctx, grpcOpts...) // connects lazily
			if err != nil {
				return fail(usageError{fmt.Errorf("--otlp-endpoint %q: %v", o.otlpEndpoint, err)})
			}
			exp = otlp
			log.Info("postrelay: exporting traces over OTLP/gRPC", "endpoint", o.otlpEndpoint)
		}
		var bspOpts []sdktrace.BatchSpanProcessorOption
		if os.Getenv("OTEL_BSP_MAX_QUEUE_SIZE") == "" {
			bspOpts = append(bspOpts, sdktrace.WithMaxQueueSize(spanQueueSize))
		}
		opts = append(opts, sdktrace.WithBatcher(exp, bspOpts...))
		tp := sdktrace.NewTracerProvider(opts...)
		shutdowns = append(shutdowns, tp.Shutdown)
		tcfg.TracerProvider = tp
		otel.SetTracerProvider(tp)
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	}

	obs, err := tracing.New(tcfg)
	if err != nil {
		return fail(err)
	}
	// Registered last, so it runs first: no Stats query once shutdown starts.
	shutdowns = append(shutdowns, func(context.Context) error { return obs.Close() })
	cfg.Observer = obs
	return shutdown, nil
}
