package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func ids(k int) []string {
	live := make([]string, k)
	for i := range live {
		live[i] = fmt.Sprintf("host-%d-%d", i, 1000+i)
	}
	return live
}

func TestAssignCoversEveryPartitionOnceAndBalances(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ instances, partitions int }{
		{1, 64}, {2, 64}, {3, 64}, {5, 64}, {8, 64}, {8, 256}, {5, 1}, {100, 64},
	} {
		t.Run(fmt.Sprintf("%d/%d", tc.instances, tc.partitions), func(t *testing.T) {
			t.Parallel()
			live := ids(tc.instances)
			seen := make(map[int]string)
			lo, hi := tc.partitions, 0
			for _, id := range live {
				mine := assign(id, live, tc.partitions)
				lo, hi = min(lo, len(mine)), max(hi, len(mine))
				for _, p := range mine {
					require.NotContains(t, seen, p, "partition %d assigned twice", p)
					seen[p] = id
				}
			}
			require.Len(t, seen, tc.partitions)
			if tc.instances <= tc.partitions {
				require.LessOrEqual(t, hi-lo, (tc.partitions+tc.instances-1)/tc.instances-tc.partitions/tc.instances+1)
			}
		})
	}
}

func TestAssignMovesFewPartitionsOnJoinAndLeave(t *testing.T) {
	t.Parallel()
	const n = 64
	for k := 2; k <= 8; k++ {
		live := ids(k)
		before := owners(live, n)
		// Leave: the leaver's partitions must move; count the others that do.
		after := owners(live[1:], n)
		extra := 0
		for p := range n {
			if before[p] != live[0] && before[p] != after[p] {
				extra++
			}
		}
		require.LessOrEqual(t, extra, n/k, "leave %d→%d moved %d partitions of staying instances", k, k-1, extra)
		// Join: about n/(k+1) must move to the newcomer.
		joined := append(append([]string{}, live...), "newcomer-1")
		afterJoin := owners(joined, n)
		moved := 0
		for p := range n {
			if afterJoin[p] != before[p] {
				moved++
			}
		}
		require.LessOrEqual(t, moved, 2*n/(k+1)+2, "join %d→%d moved %d partitions", k, k+1, moved)
	}
}

func TestOwnersIsDeterministicWhateverTheOrder(t *testing.T) {
	t.Parallel()
	a := []string{"x", "y", "z", "w"}
	b := []string{"w", "z", "y", "x"}
	require.Equal(t, owners(a, 64), owners(b, 64))
}
