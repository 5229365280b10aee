package actors

import (
	"context"
	"sync"
)

// ControlCapacity is the capacity of a mailbox's control lane.
const ControlCapacity = 16

// Mailbox is a bounded mailbox with two lanes. Receive always drains the
// control lane before the data lane, so lifecycle messages (lease lost,
// stop) overtake queued work. Ready signals, in a select, that a message may
// be waiting.
type Mailbox[T any] struct {
	mu      sync.Mutex
	control []T
	data    []T
	dataCap int
	ready   chan struct{} // capacity 1: a message may be waiting
	space   chan struct{} // capacity 1: room may have opened in a lane
}

// NewMailbox returns a mailbox whose data lane holds up to capacity
// messages (at least 1); the control lane holds ControlCapacity.
func NewMailbox[T any](capacity int) *Mailbox[T] {
	return &Mailbox[T]{
		dataCap: max(capacity, 1),
		ready:   make(chan struct{}, 1),
		space:   make(chan struct{}, 1),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (m *Mailbox[T]) push(msg T, control bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if control {
		if len(m.control) >= ControlCapacity {
			return false
		}
		m.control = append(m.control, msg)
	} else {
		if len(m.data) >= m.dataCap {
			return false
		}
		m.data = append(m.data, msg)
	}
	signal(m.ready)
	return true
}

func (m *Mailbox[T]) send(ctx context.Context, msg T, control bool) error {
	for {
		if m.push(msg, control) {
			return nil
		}
		select {
		case <-m.space:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Send puts msg on the data lane, waiting while it is full until ctx ends.
func (m *Mailbox[T]) Send(ctx context.Context, msg T) error { return m.send(ctx, msg, false) }

// TrySend puts msg on the data lane unless it is full.
func (m *Mailbox[T]) TrySend(msg T) bool { return m.push(msg, false) }

// SendControl puts msg on the control lane, waiting while it is full.
func (m *Mailbox[T]) SendControl(ctx context.Context, msg T) error { return m.send(ctx, msg, true) }

// TryReceive returns the next message, control lane first, if there is one.
func (m *Mailbox[T]) TryReceive() (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var zero T
	var msg T
	switch {
	case len(m.control) > 0:
		msg = m.control[0]
		m.control[0] = zero
		m.control = m.control[1:]
	case len(m.data) > 0:
		msg = m.data[0]
		m.data[0] = zero
		m.data = m.data[1:]
	default:
		return zero, false
	}
	if len(m.control)+len(m.data) > 0 {
		signal(m.ready)
	}
	signal(m.space)
	return msg, true
}

// Receive returns the next message, control lane first, waiting until one
// arrives or ctx ends (then it returns the context's cause).
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

// Ready returns a channel that yields when a message may be waiting; follow
// it with TryReceive (it may find nothing if another receiver was first).
func (m *Mailbox[T]) Ready() <-chan struct{} { return m.ready }

// Len returns the number of queued messages in both lanes.
func (m *Mailbox[T]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.control) + len(m.data)
}
