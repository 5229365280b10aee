package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
)

// `run --metrics-addr` serves the Prometheus names the dashboard and README
// use, with values after a known workload.
func TestRunServesPrometheusMetrics(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "--metrics-addr", "127.0.0.1:0")
	r := c.start("m1")
	addrRe := regexp.MustCompile(`serving Prometheus metrics" addr=(\S+)`)
	var addr string
	waitFor(t, 20*time.Second, "metrics address logged", func() bool {
		m := addrRe.FindStringSubmatch(r.log())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	ctx := context.Background()
	tx, err := c.pool.Begin(ctx)
	require.NoError(t, err)
	recs := make([]engine.Record, 25)
	for i := range recs {
		recs[i] = engine.Record{Topic: c.topic, Key: "k", Payload: []byte(`{}`)}
	}
	require.NoError(t, engine.NewWriter(c.cfg).Write(ctx, tx, recs...))
	require.NoError(t, tx.Commit(ctx))

	var body string
	waitFor(t, 20*time.Second, "25 deliveries in the metrics", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, `postrelay_records_delivered_total{otel_scope_name="github.com/postrelay/postrelay",otel_scope_schema_url="",otel_scope_version="",topic="`+c.topic+`"} 25`)
	})
	for _, name := range []string{
		"postrelay_partitions_owned", "postrelay_instances_live", "postrelay_lease_acquisitions_total",
		"postrelay_delivery_duration_seconds_bucket", "postrelay_delivery_lag_seconds_bucket",
		"postrelay_backlog_records", "postrelay_backlog_oldest_age_seconds", "postrelay_dead_letters",
	} {
		require.Contains(t, body, name)
	}
	c.stop(r)
}
