package engine

import "errors"

// ErrPermanent marks a Publish error that retrying cannot fix (a webhook
// answering 400, a handler refusing a malformed payload): the engine
// dead-letters the record at once, whatever attempts remain. Return it
// wrapped (Permanent(err), or fmt.Errorf("...: %w", ErrPermanent)); the
// engine checks it with errors.Is.
var ErrPermanent = errors.New("postrelay: permanent delivery error")

// Permanent wraps err so that the engine dead-letters the record at once
// instead of retrying it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }

func (e permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }
