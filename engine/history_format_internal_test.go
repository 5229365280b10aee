package engine

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// historySample is a batch's worth of records covering the format's edges:
// non-ASCII text, empty fields, extreme ids and partitions, creation times
// before and after the epoch with microseconds.
func historySample() []historyRecord {
	return []historyRecord{
		{ID: 1, Partition: 0, CreatedAt: time.Date(2026, 12, 2, 1, 2, 3, 123456000, time.UTC), Key: "acct-42", Topic: "orders",
			MessageID: "m-1", Metadata: `{"n": "1", "trace": "abc"}`, Payload: []byte(`{"total":12}`)},
		{ID: 0, Partition: 7, CreatedAt: time.Unix(0, 0).UTC(), Key: "ключ-🔑-ü", Topic: "zahlungen/ä",
			MessageID: "ü-2", Metadata: `{"grüße": "日本"}`, Payload: []byte{}},
		{ID: -5, Partition: math.MaxInt32, CreatedAt: time.Date(1969, 7, 20, 20, 17, 40, 999999000, time.UTC), Key: "",
			Topic: "t", MessageID: "", Metadata: `{}`, Payload: []byte{0, 1, 0xff, 0}},
		{ID: math.MaxInt64, Partition: 1023, CreatedAt: time.Date(2262, 1, 1, 0, 0, 0, 1000, time.UTC), Key: "k",
			Topic: "t", MessageID: "m-max", Metadata: `{"a": "b"}`, Payload: bytes.Repeat([]byte("x"), 70000)},
		{ID: math.MinInt64, Partition: -1, CreatedAt: time.Date(2000, 2, 29, 23, 59, 59, 1000, time.UTC), Key: "k",
			Topic: "t", MessageID: "m-min", Metadata: `{}`, Payload: []byte("p")},
	}
}

func encodeHistory(recs []historyRecord) ([]byte, []int) {
	b := []byte{historyFormat}
	ends := []int{len(b)}
	for _, r := range recs {
		b = appendHistoryRecord(b, r.ID, r.Partition, r.CreatedAt, r.Key, r.Topic, r.MessageID, r.Metadata, r.Payload)
		ends = append(ends, len(b))
	}
	return b, ends
}

// Every field of every record comes back as written, in stored order;
// historyRecordSize is each record's encoded size; decoded strings and
// payloads do not alias the batch.
func TestHistoryFormatRoundTrip(t *testing.T) {
	t.Parallel()
	want := historySample()
	b, ends := encodeHistory(want)
	require.Equal(t, byte(1), b[0], "format byte")
	for i, r := range want {
		require.Equal(t, ends[i+1]-ends[i], historyRecordSize(r.Key, r.Topic, r.MessageID, r.Metadata, r.Payload), "record %d", i)
	}
	got, err := DecodeHistory(b)
	require.NoError(t, err)
	require.Equal(t, want, got)
	for i := range got {
		require.True(t, got[i].CreatedAt.Equal(want[i].CreatedAt), "record %d created_at", i)
		require.Equal(t, time.UTC, got[i].CreatedAt.Location())
	}

	// The decoded values are copies: overwriting the batch changes none.
	clear(b)
	require.Equal(t, want, got)

	// A batch of no records is the format byte alone.
	got, err = DecodeHistory([]byte{historyFormat})
	require.NoError(t, err)
	require.Empty(t, got)

	// fn's error stops the decoding and is returned.
	b, _ = encodeHistory(want)
	calls := 0
	stop := bytes.ErrTooLarge
	require.ErrorIs(t, decodeHistory(b, func(historyRecord) error { calls++; return stop }), stop)
	require.Equal(t, 1, calls)
}

// An empty batch and an unknown format byte are errors.
func TestHistoryFormatRejectsUnknownFormat(t *testing.T) {
	t.Parallel()
	good, _ := encodeHistory(historySample()[:1])
	for _, tc := range []struct {
		b    []byte
		want string
	}{
		{nil, "format -1, want 1"},
		{[]byte{}, "format -1, want 1"},
		{append([]byte{0}, good[1:]...), "format 0, want 1"},
		{append([]byte{2}, good[1:]...), "format 2, want 1"},
		{[]byte{0xff}, "format 255, want 1"},
	} {
		_, err := DecodeHistory(tc.b)
		require.ErrorContains(t, err, tc.want, "batch % x", tc.b[:min(len(tc.b), 4)])
	}
}

// A batch cut at any byte is an error (never a panic), except where the
// cut falls between records: the format has no record count, so that is a
// well-formed batch of the records before the cut (Replay checks the
// count against the row's n). A length field beyond the batch or beyond
// 2^31-1 is an error too.
func TestHistoryFormatRejectsTruncatedBatches(t *testing.T) {
	t.Parallel()
	want := historySample()
	want[3].Payload = []byte("short") // keep the loop over every length quick
	b, ends := encodeHistory(want)
	boundary := map[int]int{} // batch length -> records before it
	for i, e := range ends {
		boundary[e] = i
	}
	for n := 0; n < len(b); n++ {
		got, err := DecodeHistory(b[:n:n])
		if k, ok := boundary[n]; ok {
			require.NoError(t, err, "cut at record boundary %d", n)
			require.Len(t, got, k, "cut at %d", n)
			if k > 0 {
				require.Equal(t, want[:k], got, "cut at %d", n)
			}
			continue
		}
		require.Error(t, err, "batch cut to %d of %d bytes", n, len(b))
		if n > 0 {
			require.ErrorContains(t, err, "truncated at byte", "cut to %d", n)
		}
	}

	// A key length of 2^32-1 (more than the batch holds, and negative as
	// an int32) and one of 2^31-1.
	for _, l := range []uint32{math.MaxUint32, math.MaxInt32, 1 << 31} {
		one, _ := encodeHistory(want[:1])
		binary.BigEndian.PutUint32(one[1+20:], l)
		_, err := DecodeHistory(one)
		require.Error(t, err, "key length %d", l)
	}
}

// Whatever the bytes, decodeHistory returns (records or an error) without
// panicking, and what it decodes re-encodes to the bytes it read.
func FuzzDecodeHistory(f *testing.F) {
	b, _ := encodeHistory(historySample()[:3])
	f.Add(b)
	f.Add([]byte{historyFormat})
	f.Add([]byte{})
	f.Add(b[:len(b)-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := DecodeHistory(b)
		if err != nil {
			return
		}
		again, _ := encodeHistory(recs)
		if !bytes.Equal(again, b) {
			t.Fatalf("decoded %d records that re-encode to other bytes", len(recs))
		}
	})
}
