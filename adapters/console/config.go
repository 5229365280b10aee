package console

import (
	"cmp"
	"fmt"
	"log/slog"
	"time"

	"github.com/postrelay/postrelay/engine"
)

// Defaults for Config.
const (
	MaxBodyBytesDefault   = 1 << 20
	SampleIntervalDefault = 5 * time.Second
	QueryTimeoutDefault   = 5 * time.Second
	// PendingBudget bounds the pending records counted over all
	// partitions at once: each partition's are counted up to
	// PendingBudget / partitions (between 10 and 1000: 32 with 64
	// partitions). The partitions view says "32+" beyond it, and the
	// backlog is then PostgreSQL's estimate of the records table's live rows.
	// Counting reads each record's heap tuple (its visibility), which on a
	// busy outbox is the console's largest cost: see the README's console
	// section.
	PendingBudget = 2048
	// DeadLetterCountCap is the most dead letters counted exactly.
	DeadLetterCountCap = 100000
	// HistoryWindow is how far back the rate history reaches.
	HistoryWindow = time.Hour
)

// pendingCap is the count cap per partition for n partitions.
func pendingCap(n int) int { return min(max(PendingBudget/max(n, 1), 10), 1000) }

// Config configures a Console.
type Config struct {
	// Schema is the PostgreSQL schema holding postrelay's tables, validated
	// as engine.Config.Schema is. Defaults to "postrelay".
	Schema string

	// Token is the bearer token every mutating call must carry
	// (Authorization: Bearer <token>): calls without one are answered 401,
	// calls with another 403. It must be set unless ReadOnly is. Defaults
	// to "" (no mutations without ReadOnly: New refuses).
	Token string

	// ReadOnly turns every mutating call off (403) and hides the buttons.
	// Defaults to false.
	ReadOnly bool

	// HidePayloads keeps payloads and metadata values out of every answer
	// (their sizes and keys, and the trace id, are still shown). Defaults to
	// false.
	HidePayloads bool

	// LeaseTTL is how old a relay instance's heartbeat may be for it to be
	// shown as live; use the relays' engine.Config.LeaseTTL. Defaults to
	// engine.LeaseTTLDefault (10s).
	LeaseTTL time.Duration

	// MaxBodyBytes bounds a request body; larger ones are answered 413.
	// Defaults to 1 MiB.
	MaxBodyBytes int64

	// SampleInterval is how often the rate history samples PostgreSQL's
	// counters for the records and dead_letters tables (while Run runs, and
	// on a status request when the last sample is older). The history keeps
	// the last hour. Defaults to 5s.
	SampleInterval time.Duration

	// QueryTimeout bounds every query of a request. Defaults to 5s.
	QueryTimeout time.Duration

	// Logger receives a line per mutating call (what, how many, from
	// where). nil discards them.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Schema = cmp.Or(c.Schema, engine.SchemaDefault)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, engine.LeaseTTLDefault)
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, MaxBodyBytesDefault)
	c.SampleInterval = cmp.Or(c.SampleInterval, SampleIntervalDefault)
	c.QueryTimeout = cmp.Or(c.QueryTimeout, QueryTimeoutDefault)
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
	if err := (engine.Config{Schema: c.Schema}).WithDefaults().Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	switch {
	case c.Token == "" && !c.ReadOnly:
		return bad("Token", `""`, "mutating calls need a token: set Token, or ReadOnly")
	case len(c.Token) > 0 && len(c.Token) < 16:
		return bad("Token", fmt.Sprintf("(%d characters)", len(c.Token)), "must be at least 16 characters")
	case c.LeaseTTL <= 0:
		return bad("LeaseTTL", c.LeaseTTL, "must be positive")
	case c.MaxBodyBytes < 1024:
		return bad("MaxBodyBytes", c.MaxBodyBytes, "must be at least 1024")
	case c.SampleInterval < 100*time.Millisecond || c.SampleInterval > 10*time.Minute:
		return bad("SampleInterval", c.SampleInterval, "must be between 100ms and 10m")
	case c.QueryTimeout <= 0:
		return bad("QueryTimeout", c.QueryTimeout, "must be positive")
	}
	return nil
}
