package engine

import (
	"hash/fnv"
	"slices"
)

// assign returns the partitions, out of n, that instance me owns among the
// live instances. See owners.
func assign(me string, live []string, n int) []int {
	var mine []int
	for p, o := range owners(live, n) {
		if o == me {
			mine = append(mine, p)
		}
	}
	return mine
}

// owners maps every partition to its owner by rendezvous (highest random
// weight) hashing with bounded loads: partitions are placed in order, each
// with the highest-weight instance that still has room, where room is
// ceil(n / len(live)). Every instance computes the same assignment from the
// same live set; loads differ by at most one partition; and a join or leave
// moves few partitions beyond the ~n/len(live) that must move (the tests
// bound it).
func owners(live []string, n int) []string {
	out := make([]string, n)
	k := len(live)
	if k == 0 {
		return out
	}
	room := (n + k - 1) / k
	load := make(map[string]int, k)
	type cand struct {
		id string
		w  uint64
	}
	cands := make([]cand, k)
	for p := range n {
		for i, id := range live {
			cands[i] = cand{id, weight(id, p)}
		}
		slices.SortFunc(cands, func(a, b cand) int {
			switch {
			case a.w > b.w:
				return -1
			case a.w < b.w:
				return 1
			}
			return -compareStrings(a.id, b.id)
		})
		for _, c := range cands {
			if load[c.id] < room {
				out[p] = c.id
				load[c.id]++
				break
			}
		}
	}
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// weight is the rendezvous score of (instance, partition): FNV-1a over both,
// finished with a 64-bit mixer so that similar ids spread well.
func weight(id string, p int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	_, _ = h.Write([]byte{0, byte(p), byte(p >> 8), byte(p >> 16)})
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
