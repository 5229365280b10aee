package inbox

import (
	"cmp"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// Defaults.
const (
	SchemaDefault        = "postrelay_inbox"
	RetentionDefault     = 7 * 24 * time.Hour
	PurgeIntervalDefault = time.Minute
	PurgeBatchDefault    = 5000
	MissingKeyDefault    = MissingKeyNack
)

// MissingKeyPolicy says what happens to a message without a deduplication
// key. Neither policy runs the handler: a message that cannot be claimed is
// never applied, so it can never be applied twice.
type MissingKeyPolicy string

const (
	// MissingKeyNack returns an error wrapping ErrMissingKey: the message
	// is nacked, so the subscriber redelivers it, or the router's
	// PoisonQueue middleware moves it to the poison topic (dead letters;
	// PoisonQueueWithFilter with IsMissingKey for these alone).
	MissingKeyNack MissingKeyPolicy = "nack"
	// MissingKeyDrop acks the message without running the handler, logs it
	// at warn level and counts it in postrelay.inbox.rejected.
	MissingKeyDrop MissingKeyPolicy = "drop"
)

// Config configures an Inbox.
type Config struct {
	// Consumer names the consuming application (or handler): the same
	// message is applied once per consumer name. Instances of one
	// consumer share the name. Required.
	Consumer string

	// Schema is the PostgreSQL schema holding the inbox tables. Defaults to
	// "postrelay_inbox".
	Schema string

	// Retention is how long a processed message id is kept: a redelivery
	// within it is suppressed, one after it is applied again. Defaults to
	// 7 days.
	Retention time.Duration

	// KeyMetadata, if set, names the message metadata key whose value is
	// the deduplication key, instead of the message UUID. Defaults to ""
	// (the UUID, which postrelay sets to the record's message id).
	KeyMetadata string

	// MissingKey is the policy for a message without its key. Defaults to
	// MissingKeyNack.
	MissingKey MissingKeyPolicy

	// PurgeInterval is how often Run purges expired ids. Defaults to 1m.
	PurgeInterval time.Duration

	// PurgeBatch is the most rows one purge statement deletes (each batch
	// is its own short transaction). Defaults to 5000.
	PurgeBatch int

	// Logger receives structured logs. nil discards them. Defaults to
	// discard.
	Logger *slog.Logger

	// MeterProvider creates the inbox's metric instruments. Defaults to the
	// global provider (otel.GetMeterProvider), read when New is called.
	MeterProvider metric.MeterProvider
}

var (
	schemaRe   = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,49}$`)
	consumerRe = regexp.MustCompile(`^[\x21-\x7e]{1,200}$`)
)

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Schema = cmp.Or(c.Schema, SchemaDefault)
	c.Retention = cmp.Or(c.Retention, RetentionDefault)
	c.MissingKey = cmp.Or(c.MissingKey, MissingKeyDefault)
	c.PurgeInterval = cmp.Or(c.PurgeInterval, PurgeIntervalDefault)
	c.PurgeBatch = cmp.Or(c.PurgeBatch, PurgeBatchDefault)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
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
	case c.Consumer == "":
		return bad("Consumer", `""`, "is required (the name the inbox deduplicates under)")
	case !consumerRe.MatchString(c.Consumer):
		return bad("Consumer", fmt.Sprintf("%q", c.Consumer), "must be 1 to 200 printable ASCII characters without spaces")
	case !schemaRe.MatchString(c.Schema):
		return bad("Schema", fmt.Sprintf("%q", c.Schema), "must match [a-z_][a-z0-9_]* and be at most 50 characters")
	case c.Retention < time.Second:
		return bad("Retention", c.Retention, "must be at least 1s")
	case c.MissingKey != MissingKeyNack && c.MissingKey != MissingKeyDrop:
		return bad("MissingKey", fmt.Sprintf("%q", c.MissingKey), `must be "nack" or "drop"`)
	case c.PurgeInterval < 10*time.Millisecond:
		return bad("PurgeInterval", c.PurgeInterval, "must be at least 10ms")
	case c.PurgeBatch < 1 || c.PurgeBatch > 1_000_000:
		return bad("PurgeBatch", c.PurgeBatch, "must be between 1 and 1000000")
	case c.MeterProvider == nil:
		return bad("MeterProvider", nil, "must be set (WithDefaults uses the global one)")
	}
	return nil
}

// validateSchema checks a schema name alone (for Migrate and the CLI).
func validateSchema(schema string) error {
	if !schemaRe.MatchString(schema) {
		return fmt.Errorf("%w: Schema = %q: must match [a-z_][a-z0-9_]* and be at most 50 characters", ErrInvalidConfig, schema)
	}
	return nil
}

func ident(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }
