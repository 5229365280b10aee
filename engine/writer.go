package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Metadata keys the relay sets on every outgoing message. The record's own
// metadata is carried as well; these names are reserved.
const (
	MetadataKey       = "postrelay_key"       // the record key (Kafka message key)
	MetadataRecordID  = "postrelay_record_id" // the record's id in its schema
	MetadataAttempt   = "postrelay_attempt"   // delivery attempt, 1 for the first
	MetadataPartition = "postrelay_partition" // the record's partition
)

// Record is one outgoing message written in the caller's transaction.
type Record struct {
	// Topic is the Watermill topic the record is published to. Required.
	Topic string
	// Key orders records: for one key, record N+1 is never published before
	// record N was published successfully. It also chooses the partition.
	// Empty means no ordering: the message id is used as the key.
	Key string
	// Payload is the message body. Required (empty is fine, nil is not).
	Payload []byte
	// Metadata is carried into the outgoing message's metadata.
	Metadata map[string]string
	// DeliverAfter delays delivery by this long after the writing
	// transaction's start (database clock). Later records of the same key
	// wait for it.
	DeliverAfter time.Duration
	// MessageID becomes the Watermill message UUID, stable across retries
	// for consumer deduplication. Defaults to a new UUIDv7.
	MessageID string
}

// copyThreshold is the batch size from which a pgx transaction writes with
// COPY instead of a multi-row INSERT.
const copyThreshold = 256

// insertChunk is the most rows one multi-row INSERT carries.
const insertChunk = 1000

// Writer writes records inside the caller's transaction. It is cheap, safe
// for concurrent use and meant to be reused. It reads the partition count
// from the database on first use.
type Writer struct {
	cfg        Config
	cfgErr     error
	insert     string // INSERT prefix
	partitions atomic.Int32
	lastNotify atomic.Int64 // unix nanos of the last write that notified
	// texts caches the INSERT text per row count, without and with NOTIFY.
	texts [2][insertTextCached]atomic.Pointer[string]
}

// NewWriter returns a writer for the schema in cfg. An invalid config is
// reported by every Write.
func NewWriter(cfg Config) *Writer {
	cfg, err := cfg.prepared()
	return &Writer{
		cfg:    cfg,
		cfgErr: err,
		insert: "INSERT INTO " + cfg.ident("records") +
			" (partition, key, topic, message_id, payload, metadata, available_at) VALUES ",
	}
}

// Tx is the transaction Writer.Write writes through. A pgx.Tx is one (as is
// anything with pgx's Exec and QueryRow, such as *pgx.Conn or
// *pgxpool.Conn, which write outside a transaction); SQLTx makes one of a
// database/sql *sql.Tx. Any other argument is a compile error.
type Tx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// SQLTx adapts a database/sql transaction (for instance one of pgx's stdlib
// driver) to Tx. SQLTx(nil) is a nil Tx, which Write refuses.
func SQLTx(tx *sql.Tx) Tx {
	if tx == nil {
		return nil
	}
	return sqlTx{tx}
}

type sqlTx struct{ tx *sql.Tx }

func (t sqlTx) Exec(ctx context.Context, query string, args ...any) (pgconn.CommandTag, error) {
	_, err := t.tx.ExecContext(ctx, query, args...)
	return pgconn.CommandTag{}, err
}

func (t sqlTx) QueryRow(ctx context.Context, query string, args ...any) pgx.Row {
	return t.tx.QueryRowContext(ctx, query, args...)
}

// copier is a Tx that can COPY: pgx.Tx.
type copier interface {
	Tx
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// Write stores records in tx (a pgx.Tx, or SQLTx of a *sql.Tx). The records
// exist if and only if tx commits. Many records at once go in one round trip
// (COPY from 256 records on pgx). The owning relay is woken by a NOTIFY that
// PostgreSQL sends only when tx commits.
func (w *Writer) Write(ctx context.Context, tx Tx, recs ...Record) error {
	if w.cfgErr != nil {
		return w.cfgErr
	}
	if len(recs) == 0 {
		return nil
	}
	if tx == nil {
		return fmt.Errorf("%w: tx is nil", ErrUnsupportedTx)
	}
	n, err := w.partitionCount(ctx, tx)
	if err != nil {
		return err
	}
	rows := make([]row, len(recs))
	for i := range recs {
		if err := w.prepare(ctx, &recs[i], &rows[i], i, n); err != nil {
			return err
		}
	}
	if c, ok := tx.(copier); ok && len(rows) >= copyThreshold {
		if err := w.copy(ctx, c, rows); err != nil {
			return err
		}
		return w.notify(ctx, tx, rows)
	}
	for start := 0; start < len(rows); start += insertChunk {
		chunk := rows[start:min(start+insertChunk, len(rows))]
		if err := w.insertRows(ctx, tx, chunk); err != nil {
			return err
		}
	}
	return nil
}

// row is a record ready to store.
type row struct {
	partition int
	key       string
	topic     string
	messageID string
	payload   []byte
	metadata  []byte
	delayUS   int64
}

func (w *Writer) prepare(ctx context.Context, r *Record, out *row, i, partitions int) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: record %d (topic %q): %s", ErrInvalidRecord, i, r.Topic, fmt.Sprintf(format, args...))
	}
	switch {
	case r.Topic == "":
		return fmt.Errorf("%w: record %d: topic is empty", ErrInvalidRecord, i)
	case len(r.Topic) > 255 || !utf8.ValidString(r.Topic) || strings.ContainsRune(r.Topic, 0):
		return bad("topic must be valid UTF-8 without NUL, at most 255 bytes")
	case r.Payload == nil:
		return bad("payload is nil (use []byte{} for an empty payload)")
	case len(r.Payload) > w.cfg.MaxPayloadBytes:
		return bad("payload is %d bytes, more than MaxPayloadBytes (%d)", len(r.Payload), w.cfg.MaxPayloadBytes)
	case !utf8.ValidString(r.Key) || strings.ContainsRune(r.Key, 0):
		return bad("key must be valid UTF-8 without NUL")
	case r.DeliverAfter < 0:
		return bad("DeliverAfter is negative (%v)", r.DeliverAfter)
	}
	id := r.MessageID
	if id == "" {
		id = newMessageID()
	} else if !utf8.ValidString(id) || strings.ContainsRune(id, 0) || len(id) > 255 {
		return bad("message id must be valid UTF-8 without NUL, at most 255 bytes")
	}
	key := r.Key
	if key == "" {
		key = id
	}
	md := r.Metadata
	if w.cfg.Observer != nil {
		md = make(map[string]string, len(r.Metadata)+1)
		for k, v := range r.Metadata {
			md[k] = v
		}
		w.cfg.Observer.InjectWrite(ctx, md)
	}
	var mdJSON []byte
	if len(md) == 0 {
		mdJSON = []byte("{}")
	} else {
		var err error
		if mdJSON, err = json.Marshal(md); err != nil {
			return bad("metadata: %v", err)
		}
	}
	*out = row{
		partition: Partition(key, partitions),
		key:       key,
		topic:     r.Topic,
		messageID: id,
		payload:   r.Payload,
		metadata:  mdJSON,
		delayUS:   r.DeliverAfter.Microseconds(),
	}
	return nil
}

func (w *Writer) partitionCount(ctx context.Context, tx Tx) (int, error) {
	if n := w.partitions.Load(); n > 0 {
		return int(n), nil
	}
	n, err := readPartitions(ctx, tx, w.cfg)
	if err != nil {
		return 0, fmt.Errorf("postrelay: writer: read partition count (is it migrated?): %w", err)
	}
	w.partitions.Store(int32(n))
	return n, nil
}

// notifyList returns the distinct partitions of rows to notify, or none
// when another write of this Writer notified less than NotifyInterval ago.
//
// A notifying transaction holds PostgreSQL's notification queue lock from
// its pre-commit until its commit is durable, so notifying commits are
// serialized. One notification per interval keeps that off the writers'
// critical path; the relay's tail poll, run on each notification and once
// more shortly after, finds the records of the writes that did not notify.
func (w *Writer) notifyList(rows []row) []int {
	if w.cfg.DisableNotify {
		return nil
	}
	if interval := w.cfg.NotifyInterval.Nanoseconds(); interval > 0 {
		now := time.Now().UnixNano()
		prev := w.lastNotify.Load()
		if now-prev < interval || !w.lastNotify.CompareAndSwap(prev, now) {
			return nil
		}
	}
	var ps []int
	for _, r := range rows {
		if !slices.Contains(ps, r.partition) {
			ps = append(ps, r.partition)
		}
		if len(ps) == 8 {
			break // the tail poll finds the rest
		}
	}
	return ps
}

// notifySelect returns the SELECT that notifies the partitions in its
// parameter $n (an int[]): one statement shape whatever the partitions, so
// prepared statements are reused.
func (w *Writer) notifySelect(n int) string {
	// The channel is "postrelay_" + a validated schema name: [a-z0-9_].
	return "SELECT pg_notify('" + w.cfg.NotifyChannel() + "', p::text) FROM unnest($" + strconv.Itoa(n) + "::int[]) AS n(p)"
}

func (w *Writer) notify(ctx context.Context, tx Tx, rows []row) error {
	ps := w.notifyList(rows)
	if len(ps) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, w.notifySelect(1), ps); err != nil {
		return fmt.Errorf("postrelay: writer: notify: %w", err)
	}
	return nil
}

// insertSQL returns the multi-row INSERT for rows and its arguments,
// notifying in the same statement when the rate limit allows.
func (w *Writer) insertSQL(rows []row) (string, []any) {
	ps := w.notifyList(rows)
	args := make([]any, 0, len(rows)*7+1)
	for _, r := range rows {
		args = append(args, r.partition, r.key, r.topic, r.messageID, r.payload, string(r.metadata), r.delayUS)
	}
	if len(ps) > 0 {
		args = append(args, ps)
	}
	return w.insertText(len(rows), len(ps) > 0), args
}

// insertTextCached is how many row counts have their statement text cached.
const insertTextCached = 32

// insertText returns the INSERT statement text for n rows, with or without
// the notifying SELECT; the texts of small batches are built once.
func (w *Writer) insertText(n int, notify bool) string {
	if n > insertTextCached {
		return w.buildInsert(n, notify)
	}
	slot := &w.texts[0][n-1]
	if notify {
		slot = &w.texts[1][n-1]
	}
	if t := slot.Load(); t != nil {
		return *t
	}
	t := w.buildInsert(n, notify)
	slot.Store(&t)
	return t
}

func (w *Writer) buildInsert(n int, notify bool) string {
	b := make([]byte, 0, 64+len(w.insert)+n*140)
	if notify {
		b = append(b, "WITH ins AS ("...)
	}
	b = append(b, w.insert...)
	arg := func(b []byte, i int) []byte { return strconv.AppendInt(append(b, '$'), int64(i), 10) }
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		k := i * 7
		b = append(arg(append(b, '('), k+1), "::int,"...)
		b = append(arg(b, k+2), ',')
		b = append(arg(b, k+3), ',')
		b = append(arg(b, k+4), ',')
		b = append(arg(b, k+5), "::bytea,"...)
		b = append(arg(b, k+6), "::jsonb,CASE WHEN "...)
		b = append(arg(b, k+7), "::bigint > 0 THEN now() + "...)
		b = append(arg(b, k+7), "::bigint * interval '1 microsecond' END)"...)
	}
	if notify {
		b = append(b, ") "...)
		b = append(b, w.notifySelect(n*7+1)...)
	}
	return string(b)
}

// insertRows writes rows with one multi-row INSERT.
func (w *Writer) insertRows(ctx context.Context, tx Tx, rows []row) error {
	sql, args := w.insertSQL(rows)
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("postrelay: writer: insert %d records into schema %q: %w", len(rows), w.cfg.Schema, err)
	}
	return nil
}

// QueueWrite adds the INSERT of recs to b, a pgx.Batch the caller sends in
// tx together with its own statements: the outbox then costs no extra round
// trip. tx is used only the first time, to read the partition count. The
// records exist iff tx commits; the batch's result for this statement
// reports an insert error.
func (w *Writer) QueueWrite(ctx context.Context, tx pgx.Tx, b *pgx.Batch, recs ...Record) error {
	if w.cfgErr != nil {
		return w.cfgErr
	}
	if len(recs) == 0 {
		return nil
	}
	if len(recs) > insertChunk {
		return fmt.Errorf("%w: QueueWrite takes at most %d records (got %d); use Write for more", ErrInvalidRecord, insertChunk, len(recs))
	}
	n, err := w.partitionCount(ctx, tx)
	if err != nil {
		return err
	}
	rows := make([]row, len(recs))
	for i := range recs {
		if err := w.prepare(ctx, &recs[i], &rows[i], i, n); err != nil {
			return err
		}
	}
	sql, args := w.insertSQL(rows)
	b.Queue(sql, args...)
	return nil
}

// copy writes rows with COPY. Delays are turned into absolute times with the
// transaction's now(), the value an INSERT would have used.
func (w *Writer) copy(ctx context.Context, tx copier, rows []row) error {
	var txNow time.Time
	for _, r := range rows {
		if r.delayUS > 0 {
			if err := tx.QueryRow(ctx, "SELECT now()").Scan(&txNow); err != nil {
				return fmt.Errorf("postrelay: writer: read transaction time: %w", err)
			}
			break
		}
	}
	src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		r := rows[i]
		var avail any
		if r.delayUS > 0 {
			avail = txNow.Add(time.Duration(r.delayUS) * time.Microsecond)
		}
		return []any{int32(r.partition), r.key, r.topic, r.messageID, r.payload, json.RawMessage(r.metadata), avail}, nil
	})
	_, err := tx.CopyFrom(ctx, pgx.Identifier{w.cfg.Schema, "records"},
		[]string{"partition", "key", "topic", "message_id", "payload", "metadata", "available_at"}, src)
	if err != nil {
		return fmt.Errorf("postrelay: writer: copy %d records into schema %q: %w", len(rows), w.cfg.Schema, err)
	}
	return nil
}
