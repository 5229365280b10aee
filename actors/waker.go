package actors

// Waker delivers coalescing wake-ups: any number of Wake calls between two
// receives on C produce one wake-up. Wake never blocks.
type Waker struct {
	ch chan struct{}
}

// NewWaker returns a Waker with no pending wake-up.
func NewWaker() *Waker { return &Waker{ch: make(chan struct{}, 1)} }

// Wake records a wake-up unless one is already pending.
func (w *Waker) Wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// C returns the channel that yields pending wake-ups.
func (w *Waker) C() <-chan struct{} { return w.ch }
