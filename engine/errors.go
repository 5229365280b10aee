package engine

import "errors"

var (
	// ErrLeaseLost means the partition's lease is no longer held with the
	// epoch the actor was started with: another instance took it over, or it
	// expired. A fenced statement that fails returns it; the actor stops
	// without writing.
	ErrLeaseLost = errors.New("postrelay: partition lease lost")

	// ErrNotMigrated means the schema has not been created; run Migrate or
	// `postrelay migrate` first.
	ErrNotMigrated = errors.New("postrelay: schema is not migrated")

	// ErrSchemaTooNew means the database schema was migrated by a newer
	// postrelay than this binary knows; upgrade the binary.
	ErrSchemaTooNew = errors.New("postrelay: database schema is newer than this binary")

	// ErrPartitionsMismatch means Migrate was asked for a partition count
	// other than the one the schema was created with. The count is fixed at
	// creation.
	ErrPartitionsMismatch = errors.New("postrelay: partition count differs from the migrated schema")

	// ErrInvalidConfig wraps every configuration error returned by Validate.
	ErrInvalidConfig = errors.New("postrelay: invalid config")

	// ErrInvalidRecord wraps every error about a record passed to Writer.Write.
	ErrInvalidRecord = errors.New("postrelay: invalid record")

	// ErrUnsupportedTx is returned by Writer.Write for a nil transaction
	// (the compiler refuses any other type but Tx).
	ErrUnsupportedTx = errors.New("postrelay: unsupported transaction type")

	// ErrEngineStarted is returned by a second call of Run, whether the
	// first is still running or has returned: an engine runs once; create
	// another with New to run again.
	ErrEngineStarted = errors.New("postrelay: engine already started (an engine runs once; create another with New)")

	// ErrShutdown is the cancel cause an engine gives its actors on a
	// graceful stop.
	ErrShutdown = errors.New("postrelay: engine shutting down")
)
