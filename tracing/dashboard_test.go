package tracing_test

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/tracing"
)

// prometheusFamilies returns the metric families the Observer exports
// through the OpenTelemetry Prometheus exporter, as `postrelay run
// --metrics-addr` serves them, after one event of each kind.
func prometheusFamilies(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	require.NoError(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	obs, err := tracing.New(tracing.Config{MeterProvider: mp, Stats: func(context.Context) (engine.Status, error) {
		return engine.Status{Pending: 3, OldestPendingAge: time.Second, DeadLetters: 1}, nil
	}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = obs.Close() })
	for _, e := range []engine.Event{
		{Kind: engine.EventLeaseAcquired}, {Kind: engine.EventLeaseLost}, {Kind: engine.EventLeaseReleased},
		{Kind: engine.EventInstancesChanged, Count: 2}, {Kind: engine.EventActorRestarted},
		{Kind: engine.EventDelivered, Topic: "t", Duration: time.Millisecond, Lag: time.Second},
		{Kind: engine.EventFailed, Topic: "t", Duration: time.Millisecond},
		{Kind: engine.EventDeadLettered, Topic: "t", Duration: time.Millisecond},
	} {
		obs.ObserveEvent(e)
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "postrelay_") {
			out[mf.GetName()] = mf
		}
	}
	return out
}

// The Prometheus names, as documented in doc.go and used by the dashboard.
var wantPrometheus = map[string]dto.MetricType{
	"postrelay_records_delivered_total":     dto.MetricType_COUNTER,
	"postrelay_delivery_failures_total":     dto.MetricType_COUNTER,
	"postrelay_records_dead_lettered_total": dto.MetricType_COUNTER,
	"postrelay_delivery_duration_seconds":   dto.MetricType_HISTOGRAM,
	"postrelay_delivery_lag_seconds":        dto.MetricType_HISTOGRAM,
	"postrelay_partitions_owned":            dto.MetricType_GAUGE,
	"postrelay_instances_live":              dto.MetricType_GAUGE,
	"postrelay_lease_acquisitions_total":    dto.MetricType_COUNTER,
	"postrelay_lease_losses_total":          dto.MetricType_COUNTER,
	"postrelay_actor_restarts_total":        dto.MetricType_COUNTER,
	"postrelay_backlog_records":             dto.MetricType_GAUGE,
	"postrelay_backlog_oldest_age_seconds":  dto.MetricType_GAUGE,
	"postrelay_dead_letters":                dto.MetricType_GAUGE,
}

func TestPrometheusNames(t *testing.T) {
	t.Parallel()
	fams := prometheusFamilies(t)
	got := map[string]dto.MetricType{}
	for name, mf := range fams {
		got[name] = mf.GetType()
	}
	require.Equal(t, wantPrometheus, got)

	doc, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	for name := range wantPrometheus {
		require.True(t, strings.Contains(string(doc), name), "doc.go documents %s", name)
	}
}

// Every query in the Grafana dashboard uses a metric the Observer exports,
// and every exported metric has a panel.
func TestGrafanaDashboardUsesTheExportedNames(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../examples/grafana/postrelay-dashboard.json")
	require.NoError(t, err)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.Panels)

	doc, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	nameRe := regexp.MustCompile(`postrelay_[a-z_]+`)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		require.True(t, strings.Contains(string(doc), "  - "+p.Title+":"), "doc.go describes panel %q", p.Title)
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			names := nameRe.FindAllString(tg.Expr, -1)
			require.NotEmpty(t, names, "panel %q: %s", p.Title, tg.Expr)
			for _, n := range names {
				base := n
				if _, ok := wantPrometheus[n]; !ok {
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if b, ok := strings.CutSuffix(n, suffix); ok && wantPrometheus[b] == dto.MetricType_HISTOGRAM {
							base = b
						}
					}
				}
				_, ok := wantPrometheus[base]
				require.True(t, ok, "panel %q uses %s, which is not exported", p.Title, n)
				used[base] = true
			}
		}
	}
	var unused []string
	for n := range wantPrometheus {
		if !used[n] {
			unused = append(unused, n)
		}
	}
	slices.Sort(unused)
	require.Empty(t, unused, "metrics without a panel")
}
