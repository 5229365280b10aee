package inbox

import (
	"errors"

	"github.com/postrelay/postrelay/adapters"
)

var (
	// ErrInvalidConfig wraps every configuration error returned by Validate.
	ErrInvalidConfig = errors.New("inbox: invalid config")

	// ErrNotMigrated means the inbox's tables do not exist in the configured
	// schema: run Migrate or `postrelay inbox migrate --schema S` first.
	ErrNotMigrated = errors.New("inbox: schema is not migrated")

	// ErrSchemaTooNew means the inbox schema was migrated by a newer
	// postrelay than this binary knows.
	ErrSchemaTooNew = errors.New("inbox: database schema is newer than this binary")

	// ErrUnknownConsumer means a consumer name that no inbox.New ever
	// registered in the schema (a purge by name, for example).
	ErrUnknownConsumer = errors.New("inbox: unknown consumer")

	// ErrMissingKey means a message has no deduplication key: no UUID, or
	// not the metadata Config.KeyMetadata names. With MissingKeyNack the
	// handler returns it (the message is nacked and never applied).
	ErrMissingKey = errors.New("inbox: message has no deduplication key")

	// ErrHandlerPanic wraps a panic of the user's handler, recovered after
	// the transaction was rolled back.
	ErrHandlerPanic = errors.New("inbox: handler panicked")

	// ErrNotPgxTx is returned when a consumed message's shared transaction
	// (from a watermill-sql subscriber) is not a pgx transaction.
	ErrNotPgxTx = adapters.ErrNotPgxTx
)

// IsMissingKey reports whether err is the MissingKeyNack error of a message
// without a deduplication key: a filter for the router's
// PoisonQueueWithFilter middleware, to dead-letter such messages.
func IsMissingKey(err error) bool { return errors.Is(err, ErrMissingKey) }
