package tracing

import "errors"

// ErrInvalidConfig wraps every configuration error returned by
// Config.Validate and New.
var ErrInvalidConfig = errors.New("postrelay/tracing: invalid config")
