package console

import "errors"

var (
	// ErrInvalidConfig wraps every configuration error New returns.
	ErrInvalidConfig = errors.New("console: invalid config")

	// ErrBadRequest wraps every error about a request's parameters or body;
	// the API answers it with 400 and the field it names.
	ErrBadRequest = errors.New("console: bad request")
)

// fieldError is a bad request naming the query parameter or body field at
// fault.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string { return "console: bad request: " + e.field + ": " + e.msg }

func (e *fieldError) Unwrap() error { return ErrBadRequest }

func badField(field, msg string) error { return &fieldError{field: field, msg: msg} }
