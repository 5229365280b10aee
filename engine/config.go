package engine

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults for Config. Every zero field of a Config is replaced by its default
// in WithDefaults.
const (
	SchemaDefault             = "postrelay"
	PartitionsDefault         = 64
	PartitionsMax             = 1024
	BatchSizeDefault          = 1000
	BatchSizeMax              = 10000
	PollIntervalDefault       = time.Second
	HeartbeatIntervalDefault  = time.Second
	LeaseTTLDefault           = 10 * time.Second
	MaxAttemptsDefault        = 10
	RetryInitialDefault       = time.Second
	RetryMaxDefault           = 5 * time.Minute
	RetryJitterDefault        = 0.2
	PublishTimeoutDefault     = 30 * time.Second
	PublishConcurrencyDefault = 4
	StopTimeoutDefault        = 15 * time.Second
	EventBufferDefault        = 4096
	MaxPayloadBytesDefault    = 16 << 20
	NotifyIntervalDefault     = 250 * time.Millisecond
	TailIntervalDefault       = 2 * time.Millisecond
	DeliveryConnsDefault      = 5
	DeliveryConnsMax          = 100
)

// Pooler values: what sits between the relay and PostgreSQL.
const (
	// PoolerNone: a direct connection, or a pooler in session mode (such
	// as PgBouncer's pool_mode = session), which keeps a server session
	// per client connection.
	PoolerNone = ""
	// PoolerTransaction: a pooler in transaction mode (PgBouncer's
	// pool_mode = transaction, most managed poolers), which may hand every
	// transaction to another server session.
	PoolerTransaction = "transaction"
)

// Config configures the writer, the engine and migrations. The zero value is
// usable: every field has a default.
type Config struct {
	// Schema is the PostgreSQL schema holding postrelay's tables. It must be
	// a lower-case identifier of at most 50 characters ([a-z_][a-z0-9_]*).
	// Defaults to "postrelay".
	Schema string

	// Partitions is the number of partitions Migrate creates the schema with.
	// It is fixed at creation: the writer and the engine read the count from
	// the database, and Migrate refuses a different count for an existing
	// schema. Between 1 and 1024. Defaults to 64.
	Partitions int

	// InstanceID names this relay instance in the instances and partitions
	// tables. It must be unique among live instances. Defaults to
	// "<hostname>-<pid>-<random>".
	InstanceID string

	// BatchSize is the most records a partition actor fetches, publishes and
	// completes at once. Defaults to 1000.
	BatchSize int

	// PollInterval is how often a partition actor looks for records when no
	// notification woke it: the fallback when LISTEN/NOTIFY is unavailable or
	// a notification was skipped. Defaults to 1s.
	PollInterval time.Duration

	// HeartbeatInterval is how often the coordinator heartbeats, renews its
	// leases and rebalances. Defaults to 1s.
	HeartbeatInterval time.Duration

	// LeaseTTL is how long a partition lease (and an instance heartbeat)
	// stays valid without renewal. A crashed instance's partitions are taken
	// over after at most LeaseTTL plus one HeartbeatInterval. Must be at least
	// three heartbeat intervals. Defaults to 10s.
	LeaseTTL time.Duration

	// MaxAttempts is how many delivery attempts a record gets before it is
	// moved to the dead letters. Defaults to 10.
	MaxAttempts int

	// RetryInitial is the backoff after the first failed attempt; it doubles
	// with every further failure. Defaults to 1s.
	RetryInitial time.Duration

	// RetryMax caps the retry backoff. Defaults to 5m.
	RetryMax time.Duration

	// RetryJitter spreads each backoff by ±RetryJitter of its length, between
	// 0 and 1. Defaults to 0.2. Use NoJitter for none.
	RetryJitter float64

	// PublishConcurrency is how many keys of one partition's batch are
	// published at the same time when the broker is slow: when the
	// partition's moving average of each batch's fastest Publish call is
	// 200µs or more (until measured, a broker is taken as slow). Faster
	// brokers are fed in id order from one goroutine. Records of one key are
	// always published one after the other, in order; 1 always publishes in
	// id order. Between 1 and 256. Defaults to 4.
	PublishConcurrency int

	// MaxInFlight bounds the Publish calls in flight in this instance, across
	// all its partitions: the broker connections or requests it may use at
	// once. 0 means no bound. Defaults to 0.
	MaxInFlight int

	// PublishTimeout is set as the deadline of each message's context during
	// Publish. Publishers that honour the message context give up then, and
	// the attempt counts as failed. Defaults to 30s.
	PublishTimeout time.Duration

	// StopTimeout bounds a graceful stop: actors finishing their batch and
	// leases being released. Defaults to 15s.
	StopTimeout time.Duration

	// Retention, when positive, keeps every delivered record in the
	// history table (partitioned by delivery day, UTC) for at least this
	// long and at most a day longer, for audit and Replay: the completion
	// statement that deletes a partition's delivered records also inserts
	// them, encoded by the relay into one history row per partition
	// (history_format.go), and expired days are dropped whole
	// (MaintainHistory). 0 keeps no history. Defaults to 0.
	Retention time.Duration

	// EventBuffer is the capacity of each channel returned by Events. When a
	// reader falls behind, events are dropped (and counted), never blocking
	// delivery. Defaults to 4096.
	EventBuffer int

	// MaxPayloadBytes is the largest payload Writer.Write accepts. Defaults
	// to 16 MiB.
	MaxPayloadBytes int

	// NotifyInterval rate-limits the writer's wake-up notifications: at
	// most one notifying write per interval and Writer. A notifying commit
	// holds PostgreSQL's notification queue lock until it is durable, so
	// notifying commits are serialized; rare notifications keep that off
	// the application's commits. The relay needs no more: a notification
	// keeps its tail poll polling every TailInterval for the next second
	// (and every poll that finds records extends that), so the writes that
	// did not notify are found by the poll. A negative value notifies on
	// every write. Defaults to 250ms.
	NotifyInterval time.Duration

	// TailInterval is how often the relay's tail poll looks for new records
	// (one statement: a probe of each waiting partition above the highest id
	// seen, and a fetch of those with new records) while records arrive,
	// from one poll's start to the next's while a poll takes a quarter of it
	// or less (a slower poll is followed by a wait three times as long as it
	// took, up to TailInterval, so that under load each poll carries more
	// records): about the longest a record waits to be noticed under steady
	// load. After a second
	// without new records the polls space out to 20 a second until the next
	// notification. Defaults to 2ms.
	TailInterval time.Duration

	// Pooler says what sits between the relay and PostgreSQL: "" for a
	// direct connection or a pooler in session mode, "transaction" for a
	// pooler in transaction mode (PgBouncer's pool_mode = transaction). In
	// transaction mode the delivery pool sends no startup parameters, keeps
	// no session state and prepares no named statements: each delivery
	// statement runs in its own transaction with its settings set locally,
	// all in one round trip; the pool given to New must not use named
	// prepared statements either (pgx's default_query_exec_mode=exec,
	// cache_describe or simple_protocol); and notifications come through
	// ListenURL (without it the tail poll alone finds records: every
	// TailInterval while they arrive, within about 50ms after a quiet
	// spell). Defaults to "".
	Pooler string

	// ListenURL is the PostgreSQL URL of the connection that LISTENs for
	// the writers' notifications. LISTEN needs a session of its own, so
	// behind a pooler in transaction mode point it at PostgreSQL directly
	// (or at a session-mode pool). Empty means the pool's own connection
	// settings, except with Pooler "transaction", where it means no
	// LISTEN: relays find records by the tail poll alone. Defaults to "".
	ListenURL string

	// DeliveryConns is the size of the engine's own delivery pool (fetch,
	// completion and tail statements), opened besides the pool given to New
	// and the LISTEN connection. Fewer connections bound the relay's share
	// of max_connections; under load, statements then wait for one.
	// Between 1 and 100. Defaults to 5.
	DeliveryConns int

	// DisableNotify turns off LISTEN/NOTIFY wake-ups in the writer and the
	// engine (no NOTIFY, no LISTEN connection); relays then find records by
	// the tail poll alone: every TailInterval while records arrive, and
	// within about 50ms after a quiet spell. Defaults to false.
	DisableNotify bool

	// Logger receives structured logs. nil discards them. Defaults to nil.
	Logger *slog.Logger

	// Observer receives a hook per delivery attempt and every event, for
	// tracing and metrics (see package tracing). nil means none. Defaults
	// to nil.
	Observer Observer
}

// NoJitter is the RetryJitter value for no jitter at all (0 means default).
const NoJitter = -1

var schemaRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,49}$`)

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Schema = cmp.Or(c.Schema, SchemaDefault)
	c.Partitions = cmp.Or(c.Partitions, PartitionsDefault)
	c.InstanceID = cmp.Or(c.InstanceID, defaultInstanceID())
	c.BatchSize = cmp.Or(c.BatchSize, BatchSizeDefault)
	c.PollInterval = cmp.Or(c.PollInterval, PollIntervalDefault)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, HeartbeatIntervalDefault)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, LeaseTTLDefault)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, MaxAttemptsDefault)
	c.RetryInitial = cmp.Or(c.RetryInitial, RetryInitialDefault)
	c.RetryMax = cmp.Or(c.RetryMax, RetryMaxDefault)
	c.RetryJitter = cmp.Or(c.RetryJitter, RetryJitterDefault)
	c.PublishConcurrency = cmp.Or(c.PublishConcurrency, PublishConcurrencyDefault)
	c.PublishTimeout = cmp.Or(c.PublishTimeout, PublishTimeoutDefault)
	c.StopTimeout = cmp.Or(c.StopTimeout, StopTimeoutDefault)
	c.EventBuffer = cmp.Or(c.EventBuffer, EventBufferDefault)
	c.MaxPayloadBytes = cmp.Or(c.MaxPayloadBytes, MaxPayloadBytesDefault)
	c.NotifyInterval = cmp.Or(c.NotifyInterval, NotifyIntervalDefault)
	c.TailInterval = cmp.Or(c.TailInterval, TailIntervalDefault)
	c.DeliveryConns = cmp.Or(c.DeliveryConns, DeliveryConnsDefault)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first invalid field, naming it and its value. It
// expects a config with defaults applied.
func (c Config) Validate() error {
	bad := func(field string, value any, why string) error {
		return fmt.Errorf("%w: %s = %v: %s", ErrInvalidConfig, field, value, why)
	}
	switch {
	case !schemaRe.MatchString(c.Schema):
		return bad("Schema", fmt.Sprintf("%q", c.Schema), "must match [a-z_][a-z0-9_]* and be at most 50 characters")
	case c.Partitions < 1 || c.Partitions > PartitionsMax:
		return bad("Partitions", c.Partitions, fmt.Sprintf("must be between 1 and %d", PartitionsMax))
	case len(c.InstanceID) > 200:
		return bad("InstanceID", fmt.Sprintf("%q", c.InstanceID), "must be at most 200 characters")
	case c.BatchSize < 1 || c.BatchSize > BatchSizeMax:
		return bad("BatchSize", c.BatchSize, fmt.Sprintf("must be between 1 and %d", BatchSizeMax))
	case c.PollInterval < time.Millisecond:
		return bad("PollInterval", c.PollInterval, "must be at least 1ms")
	case c.HeartbeatInterval < 10*time.Millisecond:
		return bad("HeartbeatInterval", c.HeartbeatInterval, "must be at least 10ms")
	case c.LeaseTTL < 3*c.HeartbeatInterval:
		return bad("LeaseTTL", c.LeaseTTL, fmt.Sprintf("must be at least 3 × HeartbeatInterval (%v)", c.HeartbeatInterval))
	case c.MaxAttempts < 1:
		return bad("MaxAttempts", c.MaxAttempts, "must be at least 1")
	case c.RetryInitial <= 0:
		return bad("RetryInitial", c.RetryInitial, "must be positive")
	case c.RetryMax < c.RetryInitial:
		return bad("RetryMax", c.RetryMax, "must be at least RetryInitial")
	case c.RetryJitter != NoJitter && (c.RetryJitter < 0 || c.RetryJitter > 1):
		return bad("RetryJitter", c.RetryJitter, "must be between 0 and 1 (or NoJitter)")
	case c.PublishConcurrency < 1 || c.PublishConcurrency > 256:
		return bad("PublishConcurrency", c.PublishConcurrency, "must be between 1 and 256")
	case c.MaxInFlight < 0:
		return bad("MaxInFlight", c.MaxInFlight, "must not be negative")
	case c.PublishTimeout <= 0:
		return bad("PublishTimeout", c.PublishTimeout, "must be positive")
	case c.StopTimeout <= 0:
		return bad("StopTimeout", c.StopTimeout, "must be positive")
	case c.Retention < 0:
		return bad("Retention", c.Retention, "must not be negative (0 keeps no history)")
	case c.EventBuffer < 1:
		return bad("EventBuffer", c.EventBuffer, "must be at least 1")
	case c.MaxPayloadBytes < 1 || c.MaxPayloadBytes > 1<<30-1:
		return bad("MaxPayloadBytes", c.MaxPayloadBytes, "must be between 1 and 1 GiB - 1 (PostgreSQL's bytea limit)")
	case c.TailInterval < time.Millisecond:
		return bad("TailInterval", c.TailInterval, "must be at least 1ms")
	case c.Pooler != PoolerNone && c.Pooler != PoolerTransaction:
		return bad("Pooler", fmt.Sprintf("%q", c.Pooler), `want "" (direct or session pooling) or "transaction"`)
	case c.DeliveryConns < 1 || c.DeliveryConns > DeliveryConnsMax:
		return bad("DeliveryConns", c.DeliveryConns, fmt.Sprintf("must be between 1 and %d", DeliveryConnsMax))
	}
	if c.ListenURL != "" {
		if _, err := pgx.ParseConfig(c.ListenURL); err != nil {
			return bad("ListenURL", "(redacted)", "is not a valid PostgreSQL URL")
		}
	}
	return nil
}

// prepared returns c with defaults applied, validated.
func (c Config) prepared() (Config, error) {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// ident returns the quoted schema-qualified name of a postrelay object.
func (c Config) ident(name string) string {
	return pgx.Identifier{c.Schema, name}.Sanitize()
}

// NotifyChannel is the LISTEN/NOTIFY channel the writer and engine use.
func (c Config) NotifyChannel() string {
	return "postrelay_" + cmp.Or(c.Schema, SchemaDefault)
}

func defaultInstanceID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%s", cmp.Or(host, "unknown"), os.Getpid(), randomSuffix())
}
