package engine

import "hash/fnv"

// assign returns the partitions, out of n, that rendezvous (highest random
// weight) hashing gives to instance me among the live instances. Every
// instance computes the same assignment from the same live set, and when an
// instance joins or leaves only the partitions it wins or held move: about
// n/len(live) of them.
func assign(me string, live []string, n int) []int {
	var mine []int
	for p := 0; p < n; p++ {
		if owner(live, p) == me {
			mine = append(mine, p)
		}
	}
	return mine
}

// owner returns the live instance with the highest weight for partition p,
// or "" when none is live.
func owner(live []string, p int) string {
	var best string
	var bestW uint64
	for _, id := range live {
		w := weight(id, p)
		if best == "" || w > bestW || (w == bestW && id > best) {
			best, bestW = id, w
		}
	}
	return best
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
