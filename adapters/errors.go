package adapters

import "errors"

var (
	// ErrPublisherClosed is returned by Publish on a publisher that was
	// closed.
	ErrPublisherClosed = errors.New("adapters: publisher closed")
	// ErrNotConfirmed wraps every amqp:// Publish error after which the
	// broker may or may not hold the message: the broker nacked it, the
	// connection or channel closed before its confirm, or the message's
	// context ended first. Publishing it again may duplicate it, which
	// consumers absorb by deduplicating on the message UUID.
	ErrNotConfirmed = errors.New("adapters: amqp publish not confirmed")
)
