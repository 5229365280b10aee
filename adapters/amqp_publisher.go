package adapters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// AMQP publisher settings.
const (
	// amqpChannels is the number of AMQP channels a publisher opens on its
	// one connection. A Publish call holds one channel from its first
	// message to the last confirm, so up to amqpChannels calls are in
	// flight at once and each call's confirms come on its own channel.
	amqpChannels = 16
	// amqpDialTimeout bounds a connection's TCP dial and AMQP handshake
	// when the publishing message's context has no earlier deadline.
	amqpDialTimeout = 10 * time.Second
	// amqpRedialInterval: after a failed dial, Publish returns that error
	// at once for this long instead of dialing again, so many concurrent
	// publishes during an outage make one dial, not one each.
	amqpRedialInterval = 250 * time.Millisecond
	// amqpCloseTimeout bounds the connection close handshake in Close.
	amqpCloseTimeout = 5 * time.Second
	// amqpHeartbeat is the AMQP heartbeat interval asked of the server.
	amqpHeartbeat = 10 * time.Second
	// amqpConnectionName is the connection name RabbitMQ shows (client
	// property connection_name).
	amqpConnectionName = "postrelay"
	// amqpUUIDHeader carries the message UUID: watermill-amqp's
	// DefaultMessageUUIDHeaderKey, which its subscribers read.
	amqpUUIDHeader = "_watermill_message_uuid"
)

// amqpPublisher is the amqp:// publisher: one connection, dialed again
// when it is found closed, and a pool of confirm-mode channels.
//
// Concurrency: a Publish call takes a channel from the pool (slots) for
// the whole call, publishes its messages and waits for their confirms,
// then gives the channel back. A channel thus carries one call at a time,
// so the confirms it receives belong to that call (deferred confirmations
// also match each one to its delivery tag), while up to amqpChannels calls
// proceed in parallel on their own channels. mu guards the connection
// state; a slot's fields belong to whoever holds the slot. No goroutine of
// its own but one per connection that follows RabbitMQ's blocked
// notifications and the ones that bound channel RPCs by the caller's
// context (see Publish), all started under mu while the publisher is open
// and waited for by Close; amqp091's connection goroutines end when the
// connection closes.
type amqpPublisher struct {
	url      string // secret: only through Redact
	mode     string // "queue" or "topic"
	exchange string
	name     string
	log      *slog.Logger

	slots   chan *amqpSlot
	dialing chan struct{} // capacity 1: held while dialing
	done    chan struct{} // closed by Close
	once    sync.Once
	wg      sync.WaitGroup // prepare goroutines, waited for by Close
	// inequivalent holds the queues or exchanges that exist with other
	// settings than the publisher declares (PRECONDITION_FAILED): they are
	// used as they are, not declared again.
	inequivalent sync.Map // name → struct{}

	mu      sync.Mutex
	conn    *amqpConn // nil until dialed; replaced once closed
	closed  bool
	dialErr error // the last dial's error, at dialAt
	dialAt  time.Time
}

// amqpConn is a connection and whether RabbitMQ blocks its publishes.
type amqpConn struct {
	*amqp091.Connection
	// blocked is RabbitMQ's reason while it blocks publishing on the
	// connection (a memory or disk alarm), "" otherwise.
	blocked atomic.Pointer[string]
}

// watchBlocked follows RabbitMQ's connection.blocked and .unblocked until
// the connection closes (amqp091 then closes the channel).
func (c *amqpConn) watchBlocked(blocks <-chan amqp091.Blocking, log *slog.Logger) {
	for b := range blocks {
		if b.Active {
			reason := b.Reason
			c.blocked.Store(&reason)
			log.Warn("adapters: rabbitmq blocks publishing", "reason", reason)
		} else {
			c.blocked.Store(nil)
			log.Info("adapters: rabbitmq unblocked publishing")
		}
	}
}

// amqpSlot is one pooled channel and what was declared through it.
type amqpSlot struct {
	conn     *amqpConn
	ch       *amqp091.Channel
	declared map[string]bool
}

// newAMQPPublisher returns an amqp:// publisher, connected: a broker that
// cannot be reached, or refuses the credentials, fails it at once.
func newAMQPPublisher(ctx context.Context, cfg Config, name string) (*amqpPublisher, error) {
	p := &amqpPublisher{
		url:      cfg.URL,
		mode:     cfg.AMQP.Mode,
		exchange: cfg.AMQP.Exchange,
		name:     name,
		log:      cfg.Logger,
		slots:    make(chan *amqpSlot, amqpChannels),
		dialing:  make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	for range amqpChannels {
		p.slots <- &amqpSlot{}
	}
	if _, err := p.connection(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// Publish implements message.Publisher: it returns nil once the broker
// confirmed every message. Each message's context bounds its publish and
// confirm (msg.Context(); the first message's also bounds waiting for a
// channel and dialing). An error wrapping ErrNotConfirmed means messages
// may have reached the broker anyway.
func (p *amqpPublisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ctx := msgs[0].Context()
	s, err := p.acquire(ctx)
	if err != nil {
		return p.publishError(topic, err)
	}
	if !p.ready(s, topic) {
		// Opening a channel and declaring are RPCs that amqp091 does not
		// bound by a context, and an unresponsive broker may never answer
		// them: they run in a goroutine. If the context ends first, the
		// goroutine keeps the slot until its RPC ends (Close ends them all).
		res, abandoned := make(chan error), make(chan struct{})
		if !p.spawn(func() {
			err := p.prepare(ctx, s, topic)
			select {
			case res <- err:
			case <-abandoned:
				p.slots <- s
			}
		}) {
			p.slots <- s
			return p.publishError(topic, ErrPublisherClosed)
		}
		select {
		case err := <-res:
			if err != nil {
				p.slots <- s
				return p.publishError(topic, err)
			}
		case <-ctx.Done():
			close(abandoned)
			return p.publishError(topic, fmt.Errorf("open a channel: %w", context.Cause(ctx)))
		}
	}
	defer func() { p.slots <- s }()
	if reason := s.conn.blocked.Load(); reason != nil {
		return p.publishError(topic, fmt.Errorf("rabbitmq blocks publishing on the connection: %s", *reason))
	}
	exchange, key := "", topic
	if p.mode == "topic" {
		exchange = p.exchange
	}
	confirms := make([]*amqp091.DeferredConfirmation, len(msgs))
	for i, m := range msgs {
		if err := m.Context().Err(); err != nil {
			return p.publishError(topic, fmt.Errorf("%w: message %s not published: %w", ErrNotConfirmed, m.UUID, context.Cause(m.Context())))
		}
		dc, err := s.ch.PublishWithDeferredConfirm(exchange, key, false, false, amqpPublishing(m))
		if err != nil {
			s.drop()
			return p.publishError(topic, fmt.Errorf("%w: publish message %s: %w", ErrNotConfirmed, m.UUID, err))
		}
		confirms[i] = dc
	}
	for i, dc := range confirms {
		m := msgs[i]
		ack, err := dc.WaitContext(m.Context())
		switch {
		case err != nil:
			// The channel stays usable: a late confirm settles this
			// delivery tag only.
			return p.publishError(topic, fmt.Errorf("%w: message %s: no confirm before the message's context ended: %w", ErrNotConfirmed, m.UUID, context.Cause(m.Context())))
		case !ack && s.ch.IsClosed():
			s.drop()
			return p.publishError(topic, fmt.Errorf("%w: message %s: channel closed before the confirm: %w", ErrNotConfirmed, m.UUID, amqp091.ErrClosed))
		case !ack:
			return p.publishError(topic, fmt.Errorf("%w: message %s: the broker nacked it", ErrNotConfirmed, m.UUID))
		}
	}
	return nil
}

func (p *amqpPublisher) publishError(topic string, err error) error {
	return &redactedError{msg: fmt.Sprintf("adapters: amqp publish to %q: %s", topic, RedactError(err)), err: err}
}

// acquire takes a channel slot from the pool.
func (p *amqpPublisher) acquire(ctx context.Context) (*amqpSlot, error) {
	select {
	case <-p.done:
		return nil, ErrPublisherClosed
	default:
	}
	select {
	case s := <-p.slots:
		return s, nil
	case <-p.done:
		return nil, ErrPublisherClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a free channel: %w", context.Cause(ctx))
	}
}

// spawn runs f in a goroutine Close waits for, unless the publisher is
// closed.
func (p *amqpPublisher) spawn(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Go(f)
	return true
}

// ready reports whether s has an open channel on which topic's queue or
// the exchange was declared.
func (p *amqpPublisher) ready(s *amqpSlot, topic string) bool {
	target := topic
	if p.mode == "topic" {
		target = p.exchange
	}
	return s.ch != nil && !s.ch.IsClosed() && !s.conn.IsClosed() && s.declared[target]
}

// prepare gives s an open confirm-mode channel on a live connection
// (dialing if the connection is closed) and declares topic's queue or the
// exchange once per channel.
func (p *amqpPublisher) prepare(ctx context.Context, s *amqpSlot, topic string) error {
	target := topic
	if p.mode == "topic" {
		target = p.exchange
	}
	for {
		if s.ch == nil || s.ch.IsClosed() || s.conn.IsClosed() {
			s.drop()
			conn, err := p.connection(ctx)
			if err != nil {
				return err
			}
			ch, err := conn.Channel()
			if err != nil {
				return fmt.Errorf("open channel: %w", err)
			}
			if err := ch.Confirm(false); err != nil {
				_ = ch.Close()
				return fmt.Errorf("enable publisher confirms: %w", err)
			}
			s.conn, s.ch, s.declared = conn, ch, map[string]bool{}
		}
		if s.declared[target] {
			return nil
		}
		if _, skip := p.inequivalent.Load(target); skip {
			s.declared[target] = true
			return nil
		}
		var err error
		if p.mode == "topic" {
			// As watermill-amqp's durable pub/sub config declares it.
			err = s.ch.ExchangeDeclare(p.exchange, "topic", true, false, false, false, nil)
		} else {
			// As watermill-amqp's durable queue config declares it.
			_, err = s.ch.QueueDeclare(topic, true, false, false, false, nil)
		}
		var aerr *amqp091.Error
		switch {
		case err == nil:
			s.declared[target] = true
			return nil
		case errors.As(err, &aerr) && aerr.Code == amqp091.PreconditionFailed:
			// It exists with other settings (a quorum queue, another
			// exchange type): publish to it as it is. The failed
			// declaration closed the channel; the loop opens another.
			p.log.Warn("adapters: amqp: an existing queue or exchange has other settings than postrelay declares; using it as it is",
				"name", target, "mode", p.mode, "error", aerr.Reason)
			p.inequivalent.Store(target, struct{}{})
		default:
			s.drop()
			what := "queue"
			if p.mode == "topic" {
				what = "exchange"
			}
			return fmt.Errorf("declare %s %q: %w", what, target, err)
		}
	}
}

// drop forgets s's channel, closing it if it is still open (a channel
// whose connection is closed returns at once).
func (s *amqpSlot) drop() {
	if s.ch != nil && !s.ch.IsClosed() && !s.conn.IsClosed() {
		// A channel in an unknown state on a live connection (rare: a
		// failed write or declaration normally closes the channel). Not
		// waiting for its close-ok, which a stuck broker may never send:
		// closing the connection, with a deadline, ends the channel too,
		// and the next Publish dials again.
		_ = s.conn.CloseDeadline(time.Now().Add(time.Second))
	}
	s.conn, s.ch, s.declared = nil, nil, nil
}

// connection returns the open connection, dialing one if there is none.
func (p *amqpPublisher) connection(ctx context.Context) (*amqpConn, error) {
	if c, done, err := p.current(); done {
		return c, err
	}
	select {
	case p.dialing <- struct{}{}:
	case <-p.done:
		return nil, ErrPublisherClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the connection: %w", context.Cause(ctx))
	}
	defer func() { <-p.dialing }()
	if c, done, err := p.current(); done { // another call dialed meanwhile
		return c, err
	}
	ac, err := p.dial(ctx)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		if ac != nil {
			_ = ac.CloseDeadline(time.Now().Add(amqpCloseTimeout))
		}
		return nil, ErrPublisherClosed
	}
	if err != nil {
		p.dialErr, p.dialAt = err, time.Now()
		p.mu.Unlock()
		return nil, err
	}
	c := &amqpConn{Connection: ac}
	blocks := ac.NotifyBlocked(make(chan amqp091.Blocking, 1))
	p.wg.Go(func() { c.watchBlocked(blocks, p.log) })
	reconnect := p.conn != nil
	p.conn, p.dialErr = c, nil
	p.mu.Unlock()
	if reconnect {
		p.log.Info("adapters: amqp publisher reconnected", "url", Redact(p.url))
	}
	return c, nil
}

// current returns the open connection, or the error of a dial that failed
// less than amqpRedialInterval ago, with done set; done is false when a
// dial is due.
func (p *amqpPublisher) current() (c *amqpConn, done bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return nil, true, ErrPublisherClosed
	case p.conn != nil && !p.conn.IsClosed():
		return p.conn, true, nil
	case p.dialErr != nil && time.Since(p.dialAt) < amqpRedialInterval:
		return nil, true, p.dialErr
	}
	return nil, false, nil
}

// dial opens a connection; ctx (its deadline, at most amqpDialTimeout from
// now) bounds the TCP dial and the AMQP handshake.
func (p *amqpPublisher) dial(ctx context.Context) (*amqp091.Connection, error) {
	deadline := time.Now().Add(amqpDialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	props := amqp091.NewConnectionProperties()
	props.SetClientConnectionName(p.name)
	c, err := amqp091.DialConfig(p.url, amqp091.Config{
		Heartbeat:  amqpHeartbeat,
		Locale:     "en_US",
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Cleared by amqp091 once the handshake is done.
			if err := conn.SetDeadline(deadline); err != nil {
				_ = conn.Close()
				return nil, err
			}
			return conn, nil
		},
	})
	if err != nil {
		return nil, &redactedError{msg: fmt.Sprintf("connect to %s: %s", Redact(p.url), RedactError(err)), err: err}
	}
	return c, nil
}

// Close closes the connection, which closes every channel; calls in
// flight fail. A second Close does nothing.
func (p *amqpPublisher) Close() error {
	var err error
	p.once.Do(func() {
		close(p.done)
		p.mu.Lock()
		p.closed = true
		c := p.conn
		p.conn = nil
		p.mu.Unlock()
		if c != nil && !c.IsClosed() {
			if cerr := c.CloseDeadline(time.Now().Add(amqpCloseTimeout)); cerr != nil && !errors.Is(cerr, amqp091.ErrClosed) {
				err = &redactedError{msg: "adapters: close amqp connection: " + RedactError(cerr), err: cerr}
			}
		}
		p.wg.Wait()
	})
	return err
}

// amqpPublishing is m as watermill-amqp's DefaultMarshaler writes it (and
// its subscribers read it): the payload as body, every metadata entry as a
// string header, the UUID in header "_watermill_message_uuid" (set last,
// so it wins over a metadata entry of that name), persistent delivery, no
// other property.
func amqpPublishing(m *message.Message) amqp091.Publishing {
	h := make(amqp091.Table, len(m.Metadata)+1)
	for k, v := range m.Metadata {
		h[k] = v
	}
	h[amqpUUIDHeader] = m.UUID
	return amqp091.Publishing{Headers: h, Body: m.Payload, DeliveryMode: amqp091.Persistent}
}
