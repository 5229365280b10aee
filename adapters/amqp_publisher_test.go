package adapters_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/tcpproxy"
)

// amqpSetup returns an amqp:// publisher for url whose RabbitMQ connection
// has a name of its own, and that name. The publisher and topic's queue
// are removed when the test ends.
func amqpSetup(t *testing.T, url, topic string) (message.Publisher, string) {
	t.Helper()
	adaptertest.Require(t, "127.0.0.1:5672")
	name := adaptertest.Topic("postrelay_test")
	pub, err := adapters.NewAMQPPublisherNamed(context.Background(), adapters.Config{URL: url}, name)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, pub.Close())
		require.NoError(t, pub.Close(), "a second Close")
		amqpAdmin(t, func(ch *amqp091.Channel) error { _, err := ch.QueueDelete(topic, false, false, false); return err })
	})
	return pub, name
}

// amqpAdmin runs f on a channel of a connection of its own.
func amqpAdmin(t *testing.T, f func(ch *amqp091.Channel) error) {
	t.Helper()
	conn, err := amqp091.Dial(adaptertest.AMQPURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	defer ch.Close()
	require.NoError(t, f(ch))
}

// amqpGet takes the next message of queue.
func amqpGet(t *testing.T, queue string) amqp091.Delivery {
	t.Helper()
	var d amqp091.Delivery
	amqpAdmin(t, func(ch *amqp091.Channel) error {
		var ok bool
		var err error
		d, ok, err = ch.Get(queue, true)
		if err == nil && !ok {
			err = fmt.Errorf("queue %s is empty", queue)
		}
		return err
	})
	return d
}

func withTimeout(t *testing.T, m *message.Message, d time.Duration) *message.Message {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	m.SetContext(ctx)
	return m
}

// Publish returns once the broker confirmed the message: the durable queue
// it declared holds it then, byte for byte what watermill-amqp's
// DefaultMarshaler makes of the message, and that its Unmarshal (which its
// subscriber uses) turns back into the same message.
func TestAMQPPublisherWireFormat(t *testing.T) {
	t.Parallel()
	topic := adaptertest.Topic("amqp_wire")
	pub, _ := amqpSetup(t, adaptertest.AMQPURL, topic)

	m := message.NewMessage(watermill.NewUUID(), []byte{0, 1, 0xff, 'x', 0})
	m.Metadata.Set(engine.MetadataKey, "order-7")
	m.Metadata.Set("note", "ünïcode ✓ with spaces, = and &")
	m.Metadata.Set("empty", "")
	require.NoError(t, pub.Publish(topic, m))

	d := amqpGet(t, topic)
	want, err := amqp.DefaultMarshaler{}.Marshal(m)
	require.NoError(t, err)
	require.Equal(t, want.Headers, d.Headers)
	require.Equal(t, want.Body, d.Body)
	require.Equal(t, uint8(amqp091.Persistent), d.DeliveryMode)
	require.Equal(t, want.DeliveryMode, d.DeliveryMode)
	got := amqp091.Publishing{ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, Priority: d.Priority,
		CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo, Expiration: d.Expiration, MessageId: d.MessageId,
		Timestamp: d.Timestamp, Type: d.Type, UserId: d.UserId, AppId: d.AppId,
		Headers: want.Headers, Body: want.Body, DeliveryMode: want.DeliveryMode}
	require.Equal(t, want, got, "every other property as watermill-amqp sets it")
	require.Equal(t, "", d.Exchange, "queue mode publishes through the default exchange")
	require.Equal(t, topic, d.RoutingKey)

	back, err := amqp.DefaultMarshaler{}.Unmarshal(d)
	require.NoError(t, err)
	require.Equal(t, m.UUID, back.UUID)
	require.Equal(t, m.Metadata, back.Metadata)
	require.Equal(t, []byte(m.Payload), []byte(back.Payload))
}

// A nack is an error. The queue exists with other arguments than the
// publisher declares (PRECONDITION_FAILED): it is used as it is, and,
// full, rejects the publish.
func TestAMQPPublisherNackIsError(t *testing.T) {
	t.Parallel()
	topic := adaptertest.Topic("amqp_nack")
	pub, _ := amqpSetup(t, adaptertest.AMQPURL, topic)
	amqpAdmin(t, func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(topic, true, false, false, false, amqp091.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"})
		return err
	})
	for range 2 {
		err := pub.Publish(topic, withTimeout(t, message.NewMessage(watermill.NewUUID(), []byte("x")), 10*time.Second))
		require.ErrorIs(t, err, adapters.ErrNotConfirmed)
		require.Contains(t, err.Error(), "nacked")
	}
}

func TestAMQPPublisherClosed(t *testing.T) {
	t.Parallel()
	topic := adaptertest.Topic("amqp_closed")
	pub, _ := amqpSetup(t, adaptertest.AMQPURL, topic)
	require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x"))))
	require.NoError(t, pub.Close())
	err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x")))
	require.ErrorIs(t, err, adapters.ErrPublisherClosed)
}

// Concurrent Publish calls (more than the publisher has channels) are each
// confirmed, and watermill-amqp's subscriber receives every message.
func TestAMQPPublisherConcurrent(t *testing.T) {
	t.Parallel()
	const publishers, each = 8, 200
	topic := adaptertest.Topic("amqp_concurrent")
	pub, msgs := adaptertest.AMQP().Open(t, topic)

	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for g := range publishers {
		wg.Go(func() {
			for i := range each {
				m := withTimeout(t, message.NewMessage(fmt.Sprintf("g%d-%d", g, i), []byte("x")), 30*time.Second)
				if err := pub.Publish(topic, m); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got := map[string]bool{}
	deadline := time.After(60 * time.Second)
	for len(got) < publishers*each {
		select {
		case m := <-msgs:
			m.Ack()
			got[m.UUID] = true
		case <-deadline:
			t.Fatalf("%d of %d messages received", len(got), publishers*each)
		}
	}
}

// When the connection is cut, Publish fails at once (no password in the
// error) instead of blocking; once the server is reachable again, Publish
// dials again and succeeds.
func TestAMQPPublisherConnectionCut(t *testing.T) {
	t.Parallel()
	adaptertest.Require(t, "127.0.0.1:5672")
	proxy, err := tcpproxy.New("127.0.0.1:5672")
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	topic := adaptertest.Topic("amqp_cut")
	pub, _ := amqpSetup(t, "amqp://guest:guest@"+proxy.Addr()+"/", topic)
	require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("before"))))

	proxy.Cut()
	for range 3 { // on the dead connection, then dialing a refused address
		start := time.Now()
		err := pub.Publish(topic, withTimeout(t, message.NewMessage(watermill.NewUUID(), []byte("cut")), 30*time.Second))
		require.Error(t, err)
		require.Less(t, time.Since(start), 5*time.Second, "Publish on a cut connection: %v", err)
		require.NotContains(t, err.Error(), ":guest@")
	}
	proxy.Restore()
	waitPublished(t, pub, topic, 20*time.Second)
}

// A connection RabbitMQ closes (rabbitmqctl close_connection) is dialed
// again by a later Publish.
func TestAMQPPublisherReconnectsAfterServerClose(t *testing.T) {
	t.Parallel()
	topic := adaptertest.Topic("amqp_reconnect")
	pub, name := amqpSetup(t, adaptertest.AMQPURL, topic)
	require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("before"))))
	pids := connectionPIDs(t, name)
	require.Len(t, pids, 1, "connections named %s", name)
	out, err := exec.Command("rabbitmqctl", "close_connection", pids[0], "postrelay test").CombinedOutput()
	require.NoError(t, err, "%s", out)
	waitPublished(t, pub, topic, 20*time.Second)
	after := connectionPIDs(t, name)
	require.Len(t, after, 1)
	require.NotEqual(t, pids[0], after[0], "a new connection")
}

// A publish whose confirm does not come before the message's context ends
// returns an error then; the channel stays usable once confirms flow again.
func TestAMQPPublisherContextDeadline(t *testing.T) {
	t.Parallel()
	adaptertest.Require(t, "127.0.0.1:5672")
	proxy := newStallProxy(t, "127.0.0.1:5672")
	topic := adaptertest.Topic("amqp_deadline")
	pub, _ := amqpSetup(t, "amqp://guest:guest@"+proxy.addr()+"/", topic)
	// Sequential calls take the pooled channels in turn: afterwards each
	// one is open with the queue declared, so the stalled call below waits
	// for its confirm, not for a channel.
	for range adapters.AMQPChannels {
		require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("before"))))
	}

	proxy.stall() // nothing reaches the client: no confirm
	start := time.Now()
	err := pub.Publish(topic, withTimeout(t, message.NewMessage(watermill.NewUUID(), []byte("stalled")), 300*time.Millisecond))
	elapsed := time.Since(start)
	require.ErrorIs(t, err, adapters.ErrNotConfirmed)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.GreaterOrEqual(t, elapsed, 300*time.Millisecond)
	require.Less(t, elapsed, 2*time.Second, "Publish returned %v after the deadline", elapsed-300*time.Millisecond)

	// A call that needs a new channel (a new topic to declare) is bounded
	// by its context too.
	other := adaptertest.Topic("amqp_deadline")
	t.Cleanup(func() {
		amqpAdmin(t, func(ch *amqp091.Channel) error { _, err := ch.QueueDelete(other, false, false, false); return err })
	})
	start = time.Now()
	err = pub.Publish(other, withTimeout(t, message.NewMessage(watermill.NewUUID(), []byte("stalled")), 300*time.Millisecond))
	elapsed = time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, elapsed, 2*time.Second, "Publish returned %v after the deadline", elapsed-300*time.Millisecond)

	proxy.resume()
	waitPublished(t, pub, topic, 20*time.Second)
	waitPublished(t, pub, other, 20*time.Second)
}

// waitPublished publishes until a Publish succeeds, failing the test after
// d; each attempt has a 2 s context.
func waitPublished(t *testing.T, pub message.Publisher, topic string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = pub.Publish(topic, withTimeout(t, message.NewMessage(watermill.NewUUID(), []byte("after")), 2*time.Second)); err == nil {
			return
		}
		<-time.After(50 * time.Millisecond) // pace the retries, as the engine's backoff would
	}
	t.Fatalf("no Publish succeeded within %v: %v", d, err)
}

// connectionPIDs lists the pids of RabbitMQ connections named name.
func connectionPIDs(t *testing.T, name string) []string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "list_connections", "-q", "--no-table-headers", "pid", "client_properties").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var pids []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, `"`+name+`"`) {
			pids = append(pids, strings.Fields(line)[0])
		}
	}
	return pids
}

// stallProxy forwards loopback TCP connections to a target; stall holds
// back everything the target sends until resume.
type stallProxy struct {
	ln      net.Listener
	target  string
	closing chan struct{}
	wg      sync.WaitGroup

	mu    sync.Mutex
	gate  chan struct{} // non-nil while stalled; closed by resume
	conns []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &stallProxy{ln: ln, target: target, closing: make(chan struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		close(p.closing)
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(s, c, false) })
		p.wg.Go(func() { p.pipe(c, s, true) })
	}
}

func (p *stallProxy) pipe(dst, src net.Conn, gated bool) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if gated {
				p.mu.Lock()
				gate := p.gate
				p.mu.Unlock()
				if gate != nil {
					select {
					case <-gate:
					case <-p.closing:
						return
					}
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF, reset or closed: the other side is gone
			return
		}
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

func (p *stallProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}
