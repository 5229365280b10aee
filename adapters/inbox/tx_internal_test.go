package inbox

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// In a watermill-sql subscriber's transaction (which it keeps open across
// a nack and redelivers in), the claim and the handler run under a
// savepoint opened in the claim's round trip: a failed attempt undoes its
// writes and its claim and leaves the transaction usable, the redelivery
// is applied once, a later copy is a duplicate, and all of it commits
// with the subscriber's transaction.
func TestInboxClaimInSubscriberTransaction(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := context.Background()
	require.NoError(t, Migrate(ctx, pool, schema))
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	_, err := pool.Exec(ctx, "CREATE TABLE "+effects+" (message_id text NOT NULL)")
	require.NoError(t, err)
	ib, err := New(ctx, pool, Config{Consumer: "c", Schema: schema})
	require.NoError(t, err)

	outer, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = outer.Rollback(ctx) }()
	_, err = outer.Exec(ctx, "CREATE TEMP TABLE offsets (n int)") // the subscriber's own work
	require.NoError(t, err)
	attempts := 0
	apply := func(msg *message.Message, tx pgx.Tx) error {
		attempts++
		if _, err := tx.Exec(msg.Context(), "INSERT INTO "+effects+" VALUES ($1)", msg.UUID); err != nil {
			return err
		}
		if attempts == 1 {
			return errors.New("transient")
		}
		return nil
	}
	msg := message.NewMessage("m1", nil)
	// A claim that fails when it runs leaves the subscriber's transaction
	// usable too.
	broken := *ib
	broken.claimSQL = "INSERT INTO " + ident(schema, "processed") + " (consumer, message_id) VALUES ($1, $2::int::text)"
	require.ErrorContains(t, broken.processInTx(ctx, msg, outer, "m1", apply), `claim message m1: ERROR: invalid input syntax for type integer: "m1"`)
	require.Zero(t, attempts)
	require.EqualError(t, ib.processInTx(ctx, msg, outer, "m1", apply), "transient")
	_, err = outer.Exec(ctx, "INSERT INTO offsets VALUES (1)")
	require.NoError(t, err, "the failed attempt left the subscriber's transaction usable")
	require.NoError(t, ib.processInTx(ctx, msg, outer, "m1", apply))
	require.NoError(t, ib.processInTx(ctx, msg, outer, "m1", apply))
	require.Equal(t, 2, attempts, "the duplicate does not run the handler")
	var n, claims int
	require.NoError(t, outer.QueryRow(ctx, "SELECT count(*) FROM "+effects).Scan(&n))
	require.Equal(t, 1, n)
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+effects).Scan(&n))
	require.Zero(t, n, "nothing is visible before the subscriber commits")
	require.NoError(t, outer.Commit(ctx))
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+effects).Scan(&n))
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+ident(schema, "processed")).Scan(&claims))
	require.Equal(t, 1, n)
	require.Equal(t, 1, claims)
}
