package engine

import (
	"encoding/binary"

	"github.com/jackc/pgx/v5/pgtype"
)

// intArrays is the codec of int4[] and int8[] on the delivery pool's
// connections (registerIntArrays). The relay's statements take their
// partitions, limits, epochs and record ids as []int32 and []int64, which
// pgx's ArrayCodec encodes element by element through an interface: each
// value boxed, its type looked up, its plan called, deep enough to grow a
// partition actor's stack. At 1,000 records/s that was about 3 % of the
// relay process's CPU in a profile (the tail poll sends two arrays of 64
// partitions every 2 ms; a completion, twelve arrays). intArrays writes
// those two slice types straight into PostgreSQL's binary array format,
// byte for byte what ArrayCodec writes, and hands everything else (other
// Go types, text format, decoding) to the codec it wraps.
type intArrays struct {
	pgtype.Codec
	elemOID uint32
}

// registerIntArrays wraps the int4[] and int8[] codecs of m in intArrays.
func registerIntArrays(m *pgtype.Map) {
	for _, a := range [...]struct{ oid, elem uint32 }{
		{pgtype.Int4ArrayOID, pgtype.Int4OID},
		{pgtype.Int8ArrayOID, pgtype.Int8OID},
	} {
		t, ok := m.TypeForOID(a.oid)
		if !ok {
			continue
		}
		if _, done := t.Codec.(intArrays); done {
			continue
		}
		m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: intArrays{Codec: t.Codec, elemOID: a.elem}})
	}
}

func (c intArrays) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case []int32:
			if c.elemOID == pgtype.Int4OID {
				return int4ArrayPlan{}
			}
		case []int64:
			if c.elemOID == pgtype.Int8OID {
				return int8ArrayPlan{}
			}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

// appendArrayHeader appends a one-dimensional array's header: one
// dimension of n elements from 1, no NULLs, elements of type elemOID.
func appendArrayHeader(buf []byte, n int, elemOID uint32) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 1) // dimensions
	buf = binary.BigEndian.AppendUint32(buf, 0) // no NULLs
	buf = binary.BigEndian.AppendUint32(buf, elemOID)
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	return binary.BigEndian.AppendUint32(buf, 1) // lower bound
}

type int4ArrayPlan struct{}

func (int4ArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	s := value.([]int32)
	if s == nil {
		return nil, nil // NULL, as ArrayCodec
	}
	buf = appendArrayHeader(buf, len(s), pgtype.Int4OID)
	for _, v := range s {
		buf = binary.BigEndian.AppendUint32(buf, 4)
		buf = binary.BigEndian.AppendUint32(buf, uint32(v))
	}
	return buf, nil
}

type int8ArrayPlan struct{}

func (int8ArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	s := value.([]int64)
	if s == nil {
		return nil, nil
	}
	buf = appendArrayHeader(buf, len(s), pgtype.Int8OID)
	for _, v := range s {
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = binary.BigEndian.AppendUint64(buf, uint64(v))
	}
	return buf, nil
}
