package engine

// The statements of Admin (status, dead letters). See store.go for where the
// rest of the engine's SQL lives.

// adminSQL holds Admin's statements, built once from the validated schema
// name; values travel as parameters.
type adminSQL struct {
	// deadLetters lists dead letters: $1 ids (NULL: any), $2 topic ('':
	// any), $3 limit.
	deadLetters string
	// requeueDead moves the selected dead letters ($1, $2 as above) back
	// into records, notifying their partitions; it returns (moved, notified).
	requeueDead string
	// purgeDead deletes the selected dead letters; it returns (deleted, 0).
	purgeDead string
	// partitionStatus lists each partition's lease and backlog.
	partitionStatus string
	// instanceStatus lists the instances with their heartbeat age.
	instanceStatus  string
	deadLetterCount string
}

func newAdminSQL(cfg Config) adminSQL {
	dead, records := cfg.ident("dead_letters"), cfg.ident("records")
	selectDead := `DELETE FROM ` + dead + `
		WHERE ($1::bigint[] IS NULL OR id = ANY($1)) AND ($2 = '' OR topic = $2)`
	return adminSQL{
		deadLetters: `SELECT id, partition, key, topic, message_id, payload, metadata::text, created_at,
			attempts, coalesce(last_error, ''), dead_lettered_at
		FROM ` + dead + `
		WHERE ($1::bigint[] IS NULL OR id = ANY($1)) AND ($2 = '' OR topic = $2)
		ORDER BY id LIMIT $3`,
		requeueDead: `WITH moved AS (` + selectDead + ` RETURNING *), ins AS (
				INSERT INTO ` + records + ` (partition, key, topic, message_id, payload, metadata, created_at)
				SELECT partition, key, topic, message_id, payload, metadata, created_at FROM moved ORDER BY id
				RETURNING partition
			), notified AS (
				SELECT pg_notify('` + cfg.NotifyChannel() + `', partition::text) FROM (SELECT DISTINCT partition FROM ins) p
			)
			SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM notified)`,
		purgeDead: `WITH moved AS (` + selectDead + ` RETURNING id) SELECT count(*), 0 FROM moved`,
		partitionStatus: `SELECT p.partition, coalesce(p.owner, ''), p.epoch,
			coalesce(extract(epoch FROM p.lease_until - now()), 0),
			coalesce(r.n, 0), coalesce(extract(epoch FROM now() - r.oldest), 0)
		FROM ` + cfg.ident("partitions") + ` p
		LEFT JOIN (SELECT partition, count(*) AS n, min(created_at) AS oldest
		           FROM ` + records + ` GROUP BY partition) r USING (partition)
		ORDER BY p.partition`,
		instanceStatus: `SELECT id, hostname, pid, started_at, extract(epoch FROM now() - heartbeat_at)
		FROM ` + cfg.ident("instances") + ` ORDER BY id`,
		deadLetterCount: "SELECT count(*) FROM " + dead,
	}
}
