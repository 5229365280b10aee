package engine

import (
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"time"
)

// idSources are ChaCha8 generators, each seeded from crypto/rand: a message
// id needs unpredictable, unique bits, not a system call per record.
var idSources = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand panics instead)
	return rand.NewChaCha8(seed)
}}

// newMessageID returns a UUIDv7 (RFC 9562) as its 36-character string:
// 48 bits of Unix milliseconds, the version, 12 bits of sub-millisecond
// time (so one process's ids sort by creation time, as method 3 of the RFC
// describes), the variant and 62 random bits.
func newMessageID() string {
	now := time.Now()
	ms := uint64(now.UnixMilli())
	frac := uint64(now.Nanosecond()%int(time.Millisecond)) << 12 / uint64(time.Millisecond)
	src := idSources.Get().(*rand.ChaCha8)
	rnd := src.Uint64()
	idSources.Put(src)

	var u [16]byte
	binary.BigEndian.PutUint64(u[0:8], ms<<16|0x7000|frac)
	binary.BigEndian.PutUint64(u[8:16], rnd&^(uint64(0xc0)<<56)|uint64(0x80)<<56)
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], u[10:16])
	return string(s[:])
}
