package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/tracing"
)

// setup wires metrics (--metrics-addr: Prometheus on /metrics) and traces
// (--otlp-endpoint: OTLP/gRPC; --tracing: spans created and dropped, for
// measuring their cost) into cfg.Observer, and returns a shutdown function.
func (o *observability) setup(ctx context.Context, cfg *engine.Config, pool *pgxpool.Pool, log *slog.Logger) (func(), error) {
	if o.metricsAddr == "" && o.otlpEndpoint == "" && !o.tracing {
		return func() {}, nil
	}
	var shutdowns []func(context.Context) error
	shutdown := func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for i := len(shutdowns) - 1; i >= 0; i-- {
			if err := shutdowns[i](c); err != nil {
				log.Warn("postrelay: observability shutdown", "error", err)
			}
		}
	}
	tcfg := tracing.Config{TracerProvider: trace.NewNoopTracerProvider(), MeterProvider: noopMeter()}
	if o.metricsAddr != "" {
		reg := prometheus.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return nil, fmt.Errorf("prometheus exporter: %w", err)
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
		shutdowns = append(shutdowns, mp.Shutdown)
		tcfg.MeterProvider = mp
		adminCfg := *cfg
		tcfg.Stats = engine.NewAdmin(pool, adminCfg).Status
		ln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			shutdown()
			return nil, usageError{fmt.Errorf("--metrics-addr %q: %v", o.metricsAddr, err)}
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("postrelay: metrics server", "error", err)
			}
		}()
		shutdowns = append(shutdowns, srv.Shutdown)
		log.Info("postrelay: serving Prometheus metrics", "addr", ln.Addr().String(), "path", "/metrics")
	}
	if o.otlpEndpoint != "" || o.tracing {
		opts := []sdktrace.TracerProviderOption{sdktrace.WithSampler(sdktrace.AlwaysSample())}
		if o.otlpEndpoint != "" {
			exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(o.otlpEndpoint), otlptracegrpc.WithInsecure())
			if err != nil {
				shutdown()
				return nil, fmt.Errorf("otlp exporter: %w", err)
			}
			opts = append(opts, sdktrace.WithBatcher(exp))
		}
		tp := sdktrace.NewTracerProvider(opts...)
		shutdowns = append(shutdowns, tp.Shutdown)
		tcfg.TracerProvider = tp
		otel.SetTracerProvider(tp)
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	}
	obs, err := tracing.New(tcfg)
	if err != nil {
		shutdown()
		return nil, err
	}
	cfg.Observer = obs
	return shutdown, nil
}

func noopMeter() metric.MeterProvider { return metricnoop.NewMeterProvider() }
