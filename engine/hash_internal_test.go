package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMurmur3GoldenVectors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want uint32
	}{
		{"", 0},
		{"a", 0x3c2569b2},
		{"abc", 0xb3dd93fa},
		{"test", 0xba6bd213},
		{"hello, world", 0x149bbb7f},
		{"19 Jan 2038 at 3:14:07 AM", 0xe31e8a70},
		{"The quick brown fox jumps over the lazy dog.", 0xd5c48bfc},
		{"hello", 0x248bfa47},
		{"Hello, world!", 0xc0363e43},
		{"The quick brown fox jumps over the lazy dog", 0x2e4ff723},
	} {
		require.Equal(t, tc.want, Murmur3([]byte(tc.in)), "murmur3(%q)", tc.in)
	}
}

func TestPartitionRangeAndSpread(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 7, 64, 256, 1024} {
		counts := make([]int, n)
		for i := 0; i < 20000; i++ {
			p := Partition(fmt.Sprintf("order-%d", i), n)
			require.True(t, p >= 0 && p < n)
			counts[p]++
		}
		if n == 64 {
			for p, c := range counts {
				require.InDelta(t, 20000/64, c, 120, "partition %d", p)
			}
		}
	}
}

func BenchmarkPartition(b *testing.B) {
	key := "customer-1234567"
	for b.Loop() {
		_ = Partition(key, 64)
	}
}
