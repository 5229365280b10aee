package actors

// Waker delivers coalescing wake-ups: any number of Wake calls between two
// receives on C produce a single wake-up. Wake never blocks, so a producer
// (a listener, a timer, another actor) can wake a busy actor without waiting
// for it. The zero value is not usable; call NewWaker.
type Waker struct {
	ch chan struct{}
}

// NewWaker returns a Waker with no pending wake-up.
func NewWaker() *Waker { return &Waker{ch: make(chan struct{}, 1)} }

// Wake records a wake-up unless one is already pending. It never blocks and
// is safe for concurrent use.
func (w *Waker) Wake() { signal(w.ch) }

// C returns the channel that yields the pending wake-up, for use in a select.
// Receiving from it clears the pending wake-up.
func (w *Waker) C() <-chan struct{} { return w.ch }

// signal puts a token in ch, a channel of capacity one, unless one is
// already there.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
