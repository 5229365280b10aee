package tracing

import "go.opentelemetry.io/otel/trace"

// W3C Trace Context traceparent (https://www.w3.org/TR/trace-context/):
//
//	version "-" trace-id "-" parent-id "-" trace-flags
//	00      -   32 hex   -   16 hex    -   2 hex        = 55 bytes
//
// StartAttempt parses and formats it directly instead of going through
// propagation.TraceContext and a TextMapCarrier: parsing allocates nothing
// and formatting allocates the one string stored in the message metadata.
// The rules are propagation.TraceContext's, except that version 00 must be
// exactly 55 bytes (TraceContext also accepts a trailing "-").
const traceparentLen = 55

// hexVal maps a lower-case hex digit to its value and every other byte to
// 0xff: upper-case digits are invalid in a traceparent.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// decodeHex fills dst from the 2*len(dst) lower-case hex digits of s and
// reports whether they all were valid.
func decodeHex(dst []byte, s string) bool {
	var bad byte
	for i := range dst {
		hi, lo := hexVal[s[2*i]], hexVal[s[2*i+1]]
		dst[i] = hi<<4 | lo
		bad |= hi | lo
	}
	return bad&0xf0 == 0
}

// parseTraceparent parses a W3C traceparent into a remote span context. It
// accepts version 00 exactly (55 bytes, flags 00 to 03) and, as the
// specification asks, later versions by their version-00 prefix followed by
// nothing or by "-" and further fields; version ff, an all-zero trace or
// parent id, upper-case hex and anything else malformed are rejected. Flags
// other than sampled and random are dropped.
func parseTraceparent(s string) (trace.SpanContext, bool) {
	if len(s) < traceparentLen || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return trace.SpanContext{}, false
	}
	var ver, flags [1]byte
	var scc trace.SpanContextConfig
	if !decodeHex(ver[:], s[0:2]) || ver[0] == 0xff ||
		!decodeHex(scc.TraceID[:], s[3:35]) ||
		!decodeHex(scc.SpanID[:], s[36:52]) ||
		!decodeHex(flags[:], s[53:55]) {
		return trace.SpanContext{}, false
	}
	if ver[0] == 0 {
		if len(s) != traceparentLen || flags[0] > 3 {
			return trace.SpanContext{}, false
		}
	} else if len(s) > traceparentLen && s[traceparentLen] != '-' {
		return trace.SpanContext{}, false
	}
	scc.TraceFlags = trace.TraceFlags(flags[0]) & (trace.FlagsSampled | trace.FlagsRandom)
	scc.Remote = true
	sc := trace.NewSpanContext(scc)
	if !sc.IsValid() {
		return trace.SpanContext{}, false
	}
	return sc, true
}

// formatTraceparent returns sc as a version-00 traceparent, keeping only
// the sampled and random flags, as propagation.TraceContext writes it. sc
// must be valid.
func formatTraceparent(sc trace.SpanContext) string {
	var b [traceparentLen]byte
	b[0], b[1], b[2], b[35], b[52] = '0', '0', '-', '-', '-'
	tid, sid := sc.TraceID(), sc.SpanID()
	for i, v := range tid {
		b[3+2*i], b[4+2*i] = hexDigits[v>>4], hexDigits[v&0xf]
	}
	for i, v := range sid {
		b[36+2*i], b[37+2*i] = hexDigits[v>>4], hexDigits[v&0xf]
	}
	f := byte(sc.TraceFlags() & (trace.FlagsSampled | trace.FlagsRandom))
	b[53], b[54] = hexDigits[f>>4], hexDigits[f&0xf]
	return string(b[:])
}
