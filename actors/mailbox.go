package actors

import (
	"context"
	"sync"
)

// ControlCapacity is the capacity of a mailbox's control lane.
const ControlCapacity = 16

// Mailbox is a bounded, multi-producer mailbox with two FIFO lanes: a data
// lane for work and a small control lane for lifecycle messages (lease lost,
// stop, reconfigure). Receive and TryReceive always drain the control lane
// before the data lane, so control messages overtake queued work.
//
// Ready signals that a message may be waiting, so an actor can select on its
// mailbox beside timers, a Waker and other channels:
//
//	for {
//		select {
//		case <-ctx.Done():
//			return nil
//		case <-waker.C():
//			// poll for work
//		case <-mb.Ready():
//			for msg, ok := mb.TryReceive(); ok; msg, ok = mb.TryReceive() {
//				handle(msg)
//			}
//		}
//	}
//
// A Mailbox is safe for concurrent use. The zero value is not usable; call
// NewMailbox.
type Mailbox[T any] struct {
	mu      sync.Mutex
	control ring[T]
	data    ring[T]

	// Each of these channels has capacity one and holds a token while its
	// condition may hold; a spurious token only costs a retry.
	ready        chan struct{} // a message may be waiting
	controlSpace chan struct{} // the control lane may have room
	dataSpace    chan struct{} // the data lane may have room
}

// NewMailbox returns an empty mailbox whose data lane holds up to capacity
// messages (a capacity below 1 is taken as 1); the control lane holds
// ControlCapacity messages.
func NewMailbox[T any](capacity int) *Mailbox[T] {
	return &Mailbox[T]{
		control:      newRing[T](ControlCapacity),
		data:         newRing[T](max(capacity, 1)),
		ready:        make(chan struct{}, 1),
		controlSpace: make(chan struct{}, 1),
		dataSpace:    make(chan struct{}, 1),
	}
}

// Send puts msg on the data lane, waiting while the lane is full until ctx
// ends; it then returns context.Cause(ctx).
func (m *Mailbox[T]) Send(ctx context.Context, msg T) error {
	return m.send(ctx, msg, &m.data, m.dataSpace)
}

// TrySend puts msg on the data lane and reports whether there was room. It
// never blocks.
func (m *Mailbox[T]) TrySend(msg T) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.push(msg, &m.data, m.dataSpace)
}

// SendControl puts msg on the control lane, waiting while the lane is full
// until ctx ends; it then returns context.Cause(ctx).
func (m *Mailbox[T]) SendControl(ctx context.Context, msg T) error {
	return m.send(ctx, msg, &m.control, m.controlSpace)
}

// TrySendControl puts msg on the control lane and reports whether there was
// room. It never blocks.
func (m *Mailbox[T]) TrySendControl(msg T) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.push(msg, &m.control, m.controlSpace)
}

func (m *Mailbox[T]) send(ctx context.Context, msg T, lane *ring[T], space chan struct{}) error {
	return m.sendUntil(ctx, nil, msg, lane, space)
}

// sendUntil is send that also gives up, with ErrExited, once done is closed
// (a nil done never is).
func (m *Mailbox[T]) sendUntil(ctx context.Context, done <-chan struct{}, msg T, lane *ring[T], space chan struct{}) error {
	for {
		select {
		case <-done:
			return ErrExited
		default:
		}
		m.mu.Lock()
		ok := m.push(msg, lane, space)
		m.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-space:
		case <-done:
			return ErrExited
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// push appends msg to lane if there is room. It must be called with m.mu
// held.
func (m *Mailbox[T]) push(msg T, lane *ring[T], space chan struct{}) bool {
	if !lane.push(msg) {
		return false
	}
	if !lane.full() {
		// Pass the turn on to the next blocked sender, if any.
		signal(space)
	}
	signal(m.ready)
	return true
}

// TryReceive returns the next message, control lane first, and reports
// whether there was one. It never blocks.
func (m *Mailbox[T]) TryReceive() (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	msg, ok := m.control.pop()
	if ok {
		signal(m.controlSpace)
	} else if msg, ok = m.data.pop(); ok {
		signal(m.dataSpace)
	} else {
		return msg, false
	}
	if m.control.len()+m.data.len() > 0 {
		// Keep Ready set for the rest, whoever receives them.
		signal(m.ready)
	}
	return msg, true
}

// Receive returns the next message, control lane first, waiting until one
// arrives or ctx ends; it then returns context.Cause(ctx).
func (m *Mailbox[T]) Receive(ctx context.Context) (T, error) {
	for {
		if msg, ok := m.TryReceive(); ok {
			return msg, nil
		}
		select {
		case <-m.ready:
		case <-ctx.Done():
			var zero T
			return zero, context.Cause(ctx)
		}
	}
}

// Ready returns a channel that yields when a message may be waiting, for use
// in a select. Follow it with TryReceive, which may find nothing if another
// receiver was first. While messages remain after a TryReceive or Receive,
// Ready yields again, so a receiver may take one message per wake-up.
func (m *Mailbox[T]) Ready() <-chan struct{} { return m.ready }

// Len returns the number of messages queued in both lanes.
func (m *Mailbox[T]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.control.len() + m.data.len()
}

// ring is a fixed-capacity FIFO queue.
type ring[T any] struct {
	buf  []T
	head int
	n    int
}

func newRing[T any](capacity int) ring[T] { return ring[T]{buf: make([]T, capacity)} }

func (r *ring[T]) len() int   { return r.n }
func (r *ring[T]) full() bool { return r.n == len(r.buf) }

func (r *ring[T]) push(v T) bool {
	if r.full() {
		return false
	}
	i := r.head + r.n
	if i >= len(r.buf) {
		i -= len(r.buf)
	}
	r.buf[i] = v
	r.n++
	return true
}

func (r *ring[T]) pop() (T, bool) {
	var zero T
	if r.n == 0 {
		return zero, false
	}
	v := r.buf[r.head]
	r.buf[r.head] = zero // let the garbage collector have it
	r.head++
	if r.head == len(r.buf) {
		r.head = 0
	}
	r.n--
	return v, true
}
