package recorder

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Querier runs a query: a *pgxpool.Pool, *pgx.Conn or pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// whereaboutsListed is how many missing records Whereabouts describes one
// by one; the summary counts them all.
const whereaboutsListed = 20

// Whereabouts says where each record of the outbox in schema with one of
// these message ids is: still pending (its partition, attempts,
// available_at — "held" while that lies in the future — last error, and the
// partition's lease), dead-lettered (attempts, last error), or absent from
// both (deleted as delivered, or never committed). A test whose records
// were "never delivered" appends it to its failure.
func Whereabouts(ctx context.Context, db Querier, schema string, ids []string) string {
	if len(ids) == 0 {
		return "no missing records"
	}
	ids = slices.Sorted(slices.Values(ids))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	where := make(map[string]string, len(ids))
	pending, held, dead := 0, 0, 0
	records, partitions, deadLetters := pgx.Identifier{schema, "records"}.Sanitize(),
		pgx.Identifier{schema, "partitions"}.Sanitize(), pgx.Identifier{schema, "dead_letters"}.Sanitize()
	rows, err := db.Query(ctx, `SELECT r.message_id, r.id, r.partition, r.key, r.attempts,
			coalesce(to_char(r.available_at, 'HH24:MI:SS.MS'), '-'), coalesce(r.available_at > now(), false),
			coalesce(r.last_error, ''), coalesce(p.owner, '(none)'), coalesce(to_char(p.lease_until, 'HH24:MI:SS.MS'), '-'),
			to_char(now(), 'HH24:MI:SS.MS')
		FROM `+records+` r LEFT JOIN `+partitions+` p ON p.partition = r.partition
		WHERE r.message_id = ANY($1)`, ids)
	if err != nil {
		return fmt.Sprintf("(cannot look the missing records up: %v)", err)
	}
	var mid, key, avail, lastErr, owner, leaseUntil, now string
	var id int64
	var partition, attempts int32
	var isHeld bool
	_, err = pgx.ForEachRow(rows, []any{&mid, &id, &partition, &key, &attempts, &avail, &isHeld, &lastErr, &owner, &leaseUntil, &now}, func() error {
		state := "pending"
		if isHeld {
			state, held = "held", held+1
		} else {
			pending++
		}
		where[mid] = fmt.Sprintf("%s (record %d, partition %d, key %q, attempts %d, available_at %s, now %s, last_error %q; lease: owner %s until %s)",
			state, id, partition, key, attempts, avail, now, lastErr, owner, leaseUntil)
		return nil
	})
	if err != nil {
		return fmt.Sprintf("(cannot look the missing records up: %v)", err)
	}
	rows, err = db.Query(ctx, `SELECT message_id, id, partition, key, attempts, coalesce(last_error, '')
		FROM `+deadLetters+` WHERE message_id = ANY($1)`, ids)
	if err != nil {
		return fmt.Sprintf("(cannot look the missing records up in dead_letters: %v)", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&mid, &id, &partition, &key, &attempts, &lastErr}, func() error {
		dead++
		where[mid] = fmt.Sprintf("dead-lettered (record %d, partition %d, key %q, after %d attempts, last error %q)",
			id, partition, key, attempts, lastErr)
		return nil
	})
	if err != nil {
		return fmt.Sprintf("(cannot look the missing records up in dead_letters: %v)", err)
	}
	absent := len(ids) - pending - held - dead
	var b strings.Builder
	fmt.Fprintf(&b, "%d missing: %d pending, %d held (backoff or delay), %d dead-lettered, %d absent from records and dead_letters (deleted as delivered, or never committed)",
		len(ids), pending, held, dead, absent)
	for i, id := range ids {
		if i == whereaboutsListed {
			fmt.Fprintf(&b, "\n  … and %d more", len(ids)-i)
			break
		}
		w, ok := where[id]
		if !ok {
			w = "absent"
		}
		fmt.Fprintf(&b, "\n  %s: %s", id, w)
	}
	return b.String()
}

// MissingUUIDs returns the ids in want that no delivery carries.
func MissingUUIDs(ds []Delivery, want map[string]bool) []string {
	got := UniqueUUIDs(ds)
	var out []string
	for id := range want {
		if got[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}
