package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkWriterPrepare measures the writer's own work for one record
// (validation, message id, partition, metadata, statement text and
// arguments), without the database round trip.
func BenchmarkWriterPrepare(b *testing.B) {
	w := NewWriter(Config{Schema: "bench"})
	w.partitions.Store(64)
	ctx := context.Background()
	payload := []byte(`{"order_id":1,"amount_cents":4200}`)
	rec := Record{Topic: "orders.created", Key: "customer-42", Payload: payload}
	b.ReportAllocs()
	for b.Loop() {
		var r row
		if err := w.prepare(ctx, &rec, &r, 0, 64); err != nil {
			b.Fatal(err)
		}
		sql, args := w.insertSQL([]row{r})
		if sql == "" || len(args) == 0 {
			b.Fatal("empty statement")
		}
	}
}

// The cached and built INSERT texts are the statement the writer has always
// sent: one parenthesized row of seven numbered parameters per record, the
// NOTIFY select numbered after them.
func TestInsertText(t *testing.T) {
	t.Parallel()
	w := NewWriter(Config{Schema: "s"})
	row := func(k int) string {
		return fmt.Sprintf("($%d::int,$%d,$%d,$%d,$%d::bytea,$%d::jsonb,CASE WHEN $%d::bigint > 0 THEN now() + $%d::bigint * interval '1 microsecond' END)",
			k+1, k+2, k+3, k+4, k+5, k+6, k+7, k+7)
	}
	for _, n := range []int{1, 2, insertTextCached, insertTextCached + 1, 100} {
		var rows []string
		for i := range n {
			rows = append(rows, row(i*7))
		}
		want := w.insert + strings.Join(rows, ",")
		require.Equal(t, want, w.insertText(n, false), "n=%d", n)
		require.Equal(t, want, w.insertText(n, false), "n=%d, cached", n)
		wantNotify := "WITH ins AS (" + want + ") " + w.notifySelect(n*7+1)
		require.Equal(t, wantNotify, w.insertText(n, true), "n=%d with notify", n)
	}
}
