package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAssignCoversEveryPartitionOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		instances, partitions int
	}{{1, 64}, {2, 64}, {3, 64}, {8, 256}, {5, 1}} {
		t.Run(fmt.Sprintf("%d/%d", tc.instances, tc.partitions), func(t *testing.T) {
			t.Parallel()
			live := make([]string, tc.instances)
			for i := range live {
				live[i] = fmt.Sprintf("host-%d-%d", i, 1000+i)
			}
			seen := make(map[int]string)
			for _, id := range live {
				for _, p := range assign(id, live, tc.partitions) {
					require.NotContains(t, seen, p, "partition %d assigned twice", p)
					seen[p] = id
				}
			}
			require.Len(t, seen, tc.partitions)
			if tc.partitions >= 64 {
				fair := tc.partitions / tc.instances
				for _, id := range live {
					n := len(assign(id, live, tc.partitions))
					require.InDelta(t, fair, n, float64(fair)*0.6+2, "instance %s owns %d", id, n)
				}
			}
		})
	}
}

func TestAssignMovesOnlyTheLeaversShare(t *testing.T) {
	t.Parallel()
	live := []string{"a-1", "b-2", "c-3", "d-4"}
	before := map[int]string{}
	for p := 0; p < 256; p++ {
		before[p] = owner(live, p)
	}
	after := []string{"a-1", "b-2", "d-4"} // c-3 left
	for p := 0; p < 256; p++ {
		if before[p] != "c-3" {
			require.Equal(t, before[p], owner(after, p), "partition %d moved though its owner stayed", p)
		}
	}
	joined := []string{"a-1", "b-2", "c-3", "d-4", "e-5"}
	moved := 0
	for p := 0; p < 256; p++ {
		if o := owner(joined, p); o != before[p] {
			require.Equal(t, "e-5", o, "partition %d moved between old instances", p)
			moved++
		}
	}
	require.InDelta(t, 256/5, moved, 30)
}
