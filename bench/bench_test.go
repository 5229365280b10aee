package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// The benchmark program runs its scenarios end to end on small workloads
// against the real PostgreSQL: every preloaded record is drained (the drain
// ends only when the table is empty) by relay processes and by the
// forwarder, the latency run pairs every committed record with its publish,
// and --json prints one object as the last line. Figures are not asserted:
// they live in bench/README.md.
func TestScenariosRunEndToEnd(t *testing.T) {
	pgtest.Pool(t) // fails with a hint if PostgreSQL is down
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var out, errOut bytes.Buffer
	err := run(ctx, []string{"drain", "--database-url", pgtest.URL(), "--records", "3000", "--keys", "50",
		"--instances", "2", "--baseline", "watermill-forwarder", "--json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var d DrainResult
	require.NoError(t, json.Unmarshal(lastLine(out.String()), &d), out.String())
	require.Equal(t, 3000, d.Records)
	require.Equal(t, 2, d.Instances)
	require.Positive(t, d.RecordsPerSec)
	require.Positive(t, d.PeakRSSMB)
	require.Positive(t, d.BaselineRecPerSec)
	require.InDelta(t, d.RecordsPerSec/d.BaselineRecPerSec, d.Ratio, 1e-9)

	out.Reset()
	err = run(ctx, []string{"latency", "--database-url", pgtest.URL(), "--rate", "200", "--duration", "1s", "--json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var l LatencyResult
	require.NoError(t, json.Unmarshal(lastLine(out.String()), &l), out.String())
	require.Positive(t, l.Samples)
	require.LessOrEqual(t, l.P50MS, l.P99MS)
	require.LessOrEqual(t, l.P99MS, l.MaxMS)
	require.Positive(t, l.CPUPerRecordUS)
}

func lastLine(s string) []byte {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return []byte(lines[len(lines)-1])
}

func TestMedian(t *testing.T) {
	t.Parallel()
	require.Zero(t, median(nil))
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	in := []float64{3, 1, 2}
	median(in)
	require.Equal(t, []float64{3, 1, 2}, in, "median sorted its input")
}

func TestCPUPerRecord(t *testing.T) {
	t.Parallel()
	require.Equal(t, 12.5, cpuPerRecordUS(25*time.Millisecond, 2000))
	require.Zero(t, cpuPerRecordUS(time.Second, 0))
	a := machineCPU()
	require.Positive(t, a, "/proc/stat unreadable")
	require.GreaterOrEqual(t, machineCPU(), a)
}
