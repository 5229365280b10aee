package engine

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// intArrays writes what pgx's ArrayCodec writes, byte for byte, for every
// []int32 and []int64, and leaves other values to it.
func TestIntArraysEncodeAsArrayCodecDoes(t *testing.T) {
	t.Parallel()
	plain, fast := pgtype.NewMap(), pgtype.NewMap()
	registerIntArrays(fast)
	registerIntArrays(fast) // twice: wraps once

	encode := func(m *pgtype.Map, oid uint32, v any) []byte {
		t.Helper()
		plan := m.PlanEncode(oid, pgtype.BinaryFormatCode, v)
		require.NotNil(t, plan, "%T", v)
		b, err := plan.Encode(v, []byte("prefix"))
		require.NoError(t, err)
		return b
	}
	random32 := make([]int32, 300)
	random64 := make([]int64, 300)
	for i := range random32 {
		random32[i], random64[i] = rand.Int32()-rand.Int32(), rand.Int64()-rand.Int64()
	}
	for _, v := range [][]int32{{}, {0}, {1, -1, math.MaxInt32, math.MinInt32}, random32} {
		require.Equal(t, encode(plain, pgtype.Int4ArrayOID, v), encode(fast, pgtype.Int4ArrayOID, v), "%v", v)
	}
	for _, v := range [][]int64{{}, {0}, {1, -1, math.MaxInt64, math.MinInt64}, random64} {
		require.Equal(t, encode(plain, pgtype.Int8ArrayOID, v), encode(fast, pgtype.Int8ArrayOID, v), "%v", v)
	}
	// NULL for a nil slice, as ArrayCodec.
	b, err := fast.PlanEncode(pgtype.Int8ArrayOID, pgtype.BinaryFormatCode, []int64(nil)).Encode([]int64(nil), nil)
	require.NoError(t, err)
	require.Nil(t, b)
	// Other Go types still encode, through the wrapped codec.
	for _, v := range []any{[]int{7, 8}, []int16{7, 8}, []*int64{nil}} {
		require.Equal(t, encode(plain, pgtype.Int8ArrayOID, v), encode(fast, pgtype.Int8ArrayOID, v), "%T", v)
	}
	_, isFast := fast.PlanEncode(pgtype.Int4ArrayOID, pgtype.BinaryFormatCode, []int32{1}).(int4ArrayPlan)
	require.True(t, isFast, "the fast plan serves []int32")
}

// On the delivery pool's connections, in both modes, the arrays reach
// PostgreSQL as sent.
func TestDeliveryPoolSendsIntArrays(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	for _, transaction := range []bool{false, true} {
		hot, err := openDeliveryPool(ctx, pool, deliveryPoolOptions{conns: 1, transaction: transaction})
		require.NoError(t, err)
		c, err := hot.Acquire(ctx)
		require.NoError(t, err)
		for _, oid := range []uint32{pgtype.Int4ArrayOID, pgtype.Int8ArrayOID} {
			typ, ok := c.Conn().TypeMap().TypeForOID(oid)
			require.True(t, ok)
			require.IsType(t, intArrays{}, typ.Codec, "the delivery connection encodes through intArrays")
		}
		c.Release()
		var (
			ps           []int32
			ids          []int64
			n            int
			empty, isNil bool
		)
		require.NoError(t, hot.QueryRow(ctx, "SELECT $1::int[], $2::bigint[], cardinality($3::bigint[]), $3::bigint[] = '{}', $4::int[] IS NULL",
			[]int32{3, -1, math.MaxInt32}, []int64{math.MinInt64, 0, 42}, []int64{}, []int32(nil)).
			Scan(&ps, &ids, &n, &empty, &isNil))
		require.Equal(t, []int32{3, -1, math.MaxInt32}, ps, "transaction mode %v", transaction)
		require.Equal(t, []int64{math.MinInt64, 0, 42}, ids)
		require.Zero(t, n)
		require.True(t, empty)
		require.True(t, isNil)
		hot.Close()
	}
}
