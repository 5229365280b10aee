package tracing

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

const (
	validTraceID = "0af7651916cd43dd8448eb211c80319c"
	validSpanID  = "b7ad6b7169203331"
)

func TestParseTraceparent(t *testing.T) {
	t.Parallel()
	tid, err := trace.TraceIDFromHex(validTraceID)
	require.NoError(t, err)
	sid, err := trace.SpanIDFromHex(validSpanID)
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		in    string
		ok    bool
		flags trace.TraceFlags
	}{
		{"sampled", "00-" + validTraceID + "-" + validSpanID + "-01", true, trace.FlagsSampled},
		{"not sampled", "00-" + validTraceID + "-" + validSpanID + "-00", true, 0},
		{"sampled and random", "00-" + validTraceID + "-" + validSpanID + "-03", true, trace.FlagsSampled | trace.FlagsRandom},
		{"future version", "01-" + validTraceID + "-" + validSpanID + "-01", true, trace.FlagsSampled},
		{"future version, more fields", "cc-" + validTraceID + "-" + validSpanID + "-01-what-the-future-holds", true, trace.FlagsSampled},
		{"future version, unknown flags dropped", "01-" + validTraceID + "-" + validSpanID + "-ff", true, trace.FlagsSampled | trace.FlagsRandom},

		{"empty", "", false, 0},
		{"version ff", "ff-" + validTraceID + "-" + validSpanID + "-01", false, 0},
		{"version 00, reserved flags", "00-" + validTraceID + "-" + validSpanID + "-04", false, 0},
		{"version 00, trailing dash", "00-" + validTraceID + "-" + validSpanID + "-01-", false, 0},
		{"version 00, extra field", "00-" + validTraceID + "-" + validSpanID + "-01-00", false, 0},
		{"future version, no dash after flags", "01-" + validTraceID + "-" + validSpanID + "-01x", false, 0},
		{"zero trace id", "00-" + strings.Repeat("0", 32) + "-" + validSpanID + "-01", false, 0},
		{"zero span id", "00-" + validTraceID + "-" + strings.Repeat("0", 16) + "-01", false, 0},
		{"upper-case hex", "00-" + strings.ToUpper(validTraceID) + "-" + validSpanID + "-01", false, 0},
		{"upper-case version", "0A-" + validTraceID + "-" + validSpanID + "-01", false, 0},
		{"non-hex", "00-" + validTraceID[:31] + "g-" + validSpanID + "-01", false, 0},
		{"short trace id", "00-" + validTraceID[:31] + "-" + validSpanID + "-01", false, 0},
		{"long span id", "00-" + validTraceID + "-" + validSpanID + "0-01", false, 0},
		{"wrong delimiter", "00_" + validTraceID + "-" + validSpanID + "-01", false, 0},
		{"missing flags", "00-" + validTraceID + "-" + validSpanID, false, 0},
		{"leading space", " 00-" + validTraceID + "-" + validSpanID + "-01", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sc, ok := parseTraceparent(tc.in)
			require.Equal(t, tc.ok, ok)
			if !ok {
				require.False(t, sc.IsValid())
				return
			}
			require.Equal(t, tid, sc.TraceID())
			require.Equal(t, sid, sc.SpanID())
			require.Equal(t, tc.flags, sc.TraceFlags())
			require.True(t, sc.IsRemote())
			require.Equal(t, fmt.Sprintf("00%s%02x", tc.in[2:53], byte(tc.flags)), formatTraceparent(sc))
		})
	}
}

func TestFormatTraceparentAsPropagator(t *testing.T) {
	t.Parallel()
	tid, _ := trace.TraceIDFromHex(validTraceID)
	sid, _ := trace.SpanIDFromHex(validSpanID)
	for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled, trace.FlagsRandom, 0xff} {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags})
		md := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), md)
		require.Equal(t, md["traceparent"], formatTraceparent(sc), "flags %x", flags)
	}
}

func TestTraceparentAllocations(t *testing.T) { // not parallel: AllocsPerRun
	in := "00-" + validTraceID + "-" + validSpanID + "-01"
	var sc trace.SpanContext
	require.Zero(t, testing.AllocsPerRun(100, func() { sc, _ = parseTraceparent(in) }))
	var out string
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { out = formatTraceparent(sc) }))
	require.Equal(t, in, out)
}

// FuzzParseTraceparent: parseTraceparent never panics; what it accepts,
// propagation.TraceContext accepts as the same span context, and formatting
// it round-trips; what TraceContext accepts and it rejects is only a
// version 00 header with a trailing "-" (which parseTraceparent reads
// strictly).
func FuzzParseTraceparent(f *testing.F) {
	for _, s := range []string{
		"00-" + validTraceID + "-" + validSpanID + "-01",
		"00-" + validTraceID + "-" + validSpanID + "-00",
		"01-" + validTraceID + "-" + validSpanID + "-01-future",
		"ff-" + validTraceID + "-" + validSpanID + "-01",
		"00-" + validTraceID + "-" + validSpanID + "-01-",
		"00-" + strings.Repeat("0", 32) + "-" + validSpanID + "-01",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, ok := parseTraceparent(s)
		ref := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(),
			propagation.MapCarrier{"traceparent": s}))
		if !ok {
			if sc.IsValid() {
				t.Fatalf("rejected %q but returned a valid span context", s)
			}
			if ref.IsValid() && !(strings.HasPrefix(s, "00-") && len(s) == traceparentLen+1 && s[traceparentLen] == '-') {
				t.Fatalf("TraceContext accepts %q, parseTraceparent rejects it", s)
			}
			return
		}
		if !sc.IsValid() || !sc.IsRemote() {
			t.Fatalf("accepted %q as an invalid or local span context", s)
		}
		if !ref.Equal(sc) {
			t.Fatalf("%q: parsed %v, TraceContext %v", s, sc, ref)
		}
		out := formatTraceparent(sc)
		if strings.HasPrefix(s, "00-") && out != s {
			t.Fatalf("%q formats back as %q", s, out)
		}
		again, ok := parseTraceparent(out)
		if !ok || !again.Equal(sc) {
			t.Fatalf("%q: %q does not parse back to the same span context", s, out)
		}
	})
}
