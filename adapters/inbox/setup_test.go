package inbox_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/postrelay/postrelay/adapters/inbox"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// bundle is a migrated inbox schema with a business table "effects"
// (message_id, payload) without any unique constraint: a message applied
// twice shows as two rows.
type bundle struct {
	pool    *pgxpool.Pool
	schema  string
	effects string
	reader  *sdkmetric.ManualReader
	mp      *sdkmetric.MeterProvider
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	require.NoError(t, inbox.Migrate(ctx, pool, schema))
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	_, err := pool.Exec(ctx, "CREATE TABLE "+effects+" (n bigint GENERATED ALWAYS AS IDENTITY, message_id text NOT NULL, by_consumer text NOT NULL DEFAULT '')")
	require.NoError(t, err)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return &bundle{pool: pool, schema: schema, effects: effects, reader: reader, mp: mp}
}

func (b *bundle) inbox(t *testing.T, cfg inbox.Config) *inbox.Inbox {
	t.Helper()
	cfg.Schema = b.schema
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = b.mp
	}
	ib, err := inbox.New(context.Background(), b.pool, cfg)
	require.NoError(t, err)
	return ib
}

// apply is a handler writing one effect row for the message.
func (b *bundle) apply(by string) inbox.HandlerFunc {
	return func(msg *message.Message, tx pgx.Tx) error {
		_, err := tx.Exec(msg.Context(), "INSERT INTO "+b.effects+" (message_id, by_consumer) VALUES ($1, $2)", msg.UUID, by)
		return err
	}
}

// effectCount returns how many effect rows message id has.
func (b *bundle) effectCount(t *testing.T, id string) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects+" WHERE message_id = $1", id).Scan(&n))
	return n
}

// effectsByMessage returns message id → effect rows.
func (b *bundle) effectsByMessage(t *testing.T) map[string]int {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), "SELECT message_id, count(*) FROM "+b.effects+" GROUP BY message_id")
	require.NoError(t, err)
	out := map[string]int{}
	var id string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { out[id] = n; return nil })
	require.NoError(t, err)
	return out
}

// counter returns the value of an inbox counter for consumer (0 if never
// recorded).
func (b *bundle) counter(t *testing.T, name, consumer string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, b.reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			require.True(t, ok, "%s is %T", name, m.Data)
			for _, p := range sum.DataPoints {
				if v, _ := p.Attributes.Value("consumer"); v.AsString() == consumer {
					require.Equal(t, 1, p.Attributes.Len(), "%s has only the consumer attribute", name)
					return p.Value
				}
			}
		}
	}
	return 0
}

func msgID(t *testing.T, i int) string { return fmt.Sprintf("%s-m%d", t.Name(), i) }
