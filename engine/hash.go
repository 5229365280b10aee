package engine

import (
	"encoding/binary"
	"math/bits"
)

// Murmur3 returns MurmurHash3 x86_32 of data with seed 0.
func Murmur3(data []byte) uint32 {
	const (
		c1 = 0xcc9e2d51
		c2 = 0x1b873593
	)
	var h uint32
	n := len(data)
	i := 0
	for ; i+4 <= n; i += 4 {
		k := binary.LittleEndian.Uint32(data[i:])
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
		h = bits.RotateLeft32(h, 13)
		h = h*5 + 0xe6546b64
	}
	var k uint32
	switch n & 3 {
	case 3:
		k ^= uint32(data[i+2]) << 16
		fallthrough
	case 2:
		k ^= uint32(data[i+1]) << 8
		fallthrough
	case 1:
		k ^= uint32(data[i])
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
	}
	h ^= uint32(n)
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// Partition maps a key to one of n partitions: (murmur3(key) & 0x7fffffff) % n,
// the mapping Namastack Outbox uses, and the one the SQL function
// <schema>.partition_for computes.
func Partition(key string, n int) int {
	return int(Murmur3([]byte(key))&0x7fffffff) % n
}
