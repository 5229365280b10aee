package engine

import (
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// Message ids are RFC 9562 UUIDv7 strings: version 7, RFC variant, the
// current time in their first 48 bits, unique across goroutines, and in
// creation order within one goroutine.
func TestNewMessageIDIsUUIDv7(t *testing.T) {
	t.Parallel()
	before := time.Now().Add(-time.Millisecond)
	const goroutines, each = 8, 20000
	ids := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				ids[g] = append(ids[g], newMessageID())
			}
		})
	}
	wg.Wait()
	after := time.Now().Add(time.Millisecond)
	seen := make(map[string]bool, goroutines*each)
	for _, list := range ids {
		for i, s := range list {
			require.Len(t, s, 36)
			u, err := uuid.Parse(s)
			require.NoError(t, err, s)
			require.Equal(t, uuid.Version(7), u.Version(), s)
			require.Equal(t, uuid.RFC4122, u.Variant(), s)
			sec, nsec := u.Time().UnixTime()
			ts := time.Unix(sec, nsec)
			require.False(t, ts.Before(before.Truncate(time.Millisecond)) || ts.After(after), "%s: time %v not in [%v, %v]", s, ts, before, after)
			require.False(t, seen[s], "duplicate id %s", s)
			seen[s] = true
			if i > 0 {
				require.LessOrEqual(t, list[i-1][:18], s[:18], "ids of one goroutine in creation order")
			}
		}
	}
}

func BenchmarkNewMessageID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = newMessageID()
	}
}
