package adapters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/postrelay/postrelay/engine"
)

// NewPublisher builds the Watermill publisher cfg describes. The returned
// publisher's Close closes every connection it opened. Errors never contain
// the URL's password.
func NewPublisher(ctx context.Context, cfg Config) (message.Publisher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Routes) > 0 {
		return NewRouter(ctx, cfg)
	}
	p, _ := parseURL(cfg.URL)
	cfg.Logger = redactingLogger(cfg.Logger)
	logger := newWatermillLogger(cfg.Logger)
	wrap := func(what string, err error) error {
		return &redactedError{
			msg: fmt.Sprintf("adapters: open %s publisher for %s: %s", what, Redact(cfg.URL), RedactError(err)),
			err: err,
		}
	}
	switch p.scheme {
	case "memory":
		return NewMemory(cfg), nil
	case "postgres", "postgresql":
		pub, err := newSQLPublisher(ctx, cfg, logger)
		if err != nil {
			return nil, wrap("postgres", err)
		}
		return pub, nil
	case "amqp", "amqps":
		pub, err := newAMQPPublisher(ctx, cfg, amqpConnectionName)
		if err != nil {
			return nil, wrap("amqp", err)
		}
		return pub, nil
	case "nats":
		pub, err := newNATSPublisher(cfg, logger)
		if err != nil {
			return nil, wrap("nats", err)
		}
		return pub, nil
	case "redis", "rediss":
		opts, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, wrap("redis", err)
		}
		client := redis.NewClient(opts)
		if err := client.Ping(ctx).Err(); err != nil {
			_ = client.Close()
			return nil, wrap("redis", err)
		}
		pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: client, DefaultMaxlen: cfg.Redis.MaxLen}, logger)
		if err != nil {
			_ = client.Close()
			return nil, wrap("redis", err)
		}
		// The redisstream publisher closes the client in its own Close
		// (closing it here too returned "redis: client is closed").
		return pub, nil
	case "http", "https":
		return newWebhookPublisher(cfg), nil
	case "kafka":
		pub, err := kafka.NewPublisher(kafka.PublisherConfig{
			Brokers:               p.hosts,
			Marshaler:             KafkaMarshaler(),
			OverwriteSaramaConfig: saramaConfig(cfg),
		}, logger)
		if err != nil {
			return nil, wrap("kafka", err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("%w: unknown broker scheme %q", ErrInvalidConfig, p.scheme)
}

// Memory is the memory:// broker: Watermill's gochannel. It is also a
// message.Subscriber, for tests and demos.
type Memory struct {
	*gochannel.GoChannel
	print bool
	log   *slog.Logger
}

// NewMemory returns a memory broker. Messages published while nobody
// subscribes to their topic are dropped.
func NewMemory(cfg Config) *Memory {
	cfg = cfg.WithDefaults()
	cfg.Logger = redactingLogger(cfg.Logger)
	if p, err := parseURL(cfg.URL); err == nil && p.scheme == "memory" && p.u.Query().Has("print") {
		cfg.Memory.Print, _ = strconv.ParseBool(p.u.Query().Get("print"))
	}
	return &Memory{
		// Blocking until the subscriber acks keeps per-key order (gochannel
		// otherwise hands each message to its own goroutine) and makes a
		// successful Publish mean the subscriber has the message. Without
		// subscribers nothing blocks.
		GoChannel: gochannel.NewGoChannel(gochannel.Config{
			OutputChannelBuffer:            cfg.Memory.OutputBuffer,
			BlockPublishUntilSubscriberAck: true,
		}, newWatermillLogger(cfg.Logger)),
		print: cfg.Memory.Print,
		log:   cfg.Logger,
	}
}

// Publish implements message.Publisher.
func (m *Memory) Publish(topic string, msgs ...*message.Message) error {
	if m.print {
		for _, msg := range msgs {
			m.log.Info("adapters: memory broker message", "topic", topic, "message_id", msg.UUID,
				"key", msg.Metadata.Get(engine.MetadataKey), "payload_bytes", len(msg.Payload))
		}
	}
	return m.GoChannel.Publish(topic, msgs...)
}

func newSQLPublisher(ctx context.Context, cfg Config, logger watermill.LoggerAdapter) (message.Publisher, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, errors.New("the URL is not a valid PostgreSQL URL")
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	pub, err := wsql.NewPublisher(wsql.BeginnerFromPgx(pool), wsql.PublisherConfig{
		SchemaAdapter:        SQLSchema(cfg),
		AutoInitializeSchema: true,
	}, logger)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return withClose(pub, func() error { pool.Close(); return nil }), nil
}

// SQLSchema is the watermill-sql schema adapter postgres:// uses; a
// watermill-sql subscriber reading the same topics must use it too.
func SQLSchema(cfg Config) wsql.DefaultPostgreSQLSchema {
	cfg = cfg.WithDefaults()
	typ := strings.ToUpper(cfg.SQL.PayloadType)
	return wsql.DefaultPostgreSQLSchema{GeneratePayloadType: func(string) string { return typ }}
}

// natsPublisher makes sure a JetStream stream captures each topic before
// its first publish: a stream that already covers the subject (one the
// user created, such as "ORDERS" with subjects "orders.>") is used as it
// is; otherwise a stream named NATSStreamName(topic) with the topic as its
// only subject is created. Stream names cannot contain '.', which topics
// such as "orders.placed" do, hence the renaming; the subject stays the
// topic itself.
type natsPublisher struct {
	message.Publisher
	conn        *nats.Conn
	js          nats.JetStreamContext
	provisioned sync.Map // topic → struct{}
}

// NATS connection settings: reconnect forever (a relay must outlive any
// outage), quickly.
const (
	natsReconnectWait = 250 * time.Millisecond
	natsName          = "postrelay"
)

func newNATSPublisher(cfg Config, logger watermill.LoggerAdapter) (message.Publisher, error) {
	conn, err := nats.Connect(cfg.URL, nats.Name(natsName), nats.MaxReconnects(-1), nats.ReconnectWait(natsReconnectWait))
	if err != nil {
		return nil, err
	}
	js, err := conn.JetStream()
	if err != nil {
		conn.Close()
		return nil, err
	}
	pub, err := wnats.NewPublisherWithNatsConn(conn, wnats.PublisherPublishConfig{
		Marshaler:         &wnats.NATSMarshaler{},
		SubjectCalculator: wnats.DefaultSubjectCalculator,
		JetStream:         wnats.JetStreamConfig{TrackMsgID: !cfg.NATS.DisableMsgID},
	}, logger)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &natsPublisher{Publisher: pub, conn: conn, js: js}, nil
}

// NATSStreamName is the JetStream stream nats:// creates for a topic no
// existing stream covers: the topic with '.', '*', '>' and ' ' replaced by
// '_'.
func NATSStreamName(topic string) string {
	return strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_").Replace(topic)
}

func (p *natsPublisher) Publish(topic string, msgs ...*message.Message) error {
	if _, ok := p.provisioned.Load(topic); !ok {
		if err := p.provision(topic); err != nil {
			return err
		}
		p.provisioned.Store(topic, struct{}{})
	}
	return p.Publisher.Publish(topic, msgs...)
}

func (p *natsPublisher) provision(topic string) error {
	if _, err := p.js.StreamNameBySubject(topic); err == nil {
		return nil // an existing stream captures the topic
	} else if !errors.Is(err, nats.ErrStreamNotFound) && !errors.Is(err, nats.ErrNoMatchingStream) {
		return fmt.Errorf("adapters: look up the JetStream stream of topic %q: %w", topic, err)
	}
	name := NATSStreamName(topic)
	if _, err := p.js.AddStream(&nats.StreamConfig{Name: name, Subjects: []string{topic}}); err != nil {
		// Another publisher may have created the stream meanwhile.
		if _, lerr := p.js.StreamNameBySubject(topic); lerr == nil {
			return nil
		}
		return fmt.Errorf("adapters: create JetStream stream %q for topic %q: %w", name, topic, err)
	}
	return nil
}

func (p *natsPublisher) Close() error {
	err := p.Publisher.Close()
	p.conn.Close()
	return err
}

// KafkaMarshaler marshals messages with the record key (metadata
// postrelay_key) as the Kafka message key, so the records of one key land
// in one Kafka partition, in order. A message without a key gets a nil
// Kafka key: the producer spreads such messages over the partitions. As an
// Unmarshaler it is watermill-kafka's default (UUID from the
// "_watermill_message_uuid" header, every other header as metadata).
func KafkaMarshaler() kafka.MarshalerUnmarshaler { return kafkaMarshaler{} }

type kafkaMarshaler struct{ kafka.DefaultMarshaler }

func (m kafkaMarshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	km, err := m.DefaultMarshaler.Marshal(topic, msg)
	if err != nil {
		return nil, err
	}
	if key := msg.Metadata.Get(engine.MetadataKey); key != "" {
		km.Key = sarama.StringEncoder(key)
	}
	return km, nil
}

// redactingLogger returns l behind a handler that redacts passwords.
func redactingLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(newRedactHandler(l.Handler()))
}

func saramaConfig(cfg Config) *sarama.Config {
	c := kafka.DefaultSaramaSyncPublisherConfig()
	c.ClientID = cfg.Kafka.ClientID
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Timeout = cfg.Kafka.Timeout
	c.Producer.Partitioner = sarama.NewHashPartitioner
	c.Producer.Idempotent = false
	c.Net.MaxOpenRequests = 1 // with retries, keeps per-partition order
	return c
}

// closing adds cleanups to a publisher's Close.
type closing struct {
	message.Publisher
	extra []func() error
}

func withClose(p message.Publisher, extra ...func() error) message.Publisher {
	return &closing{Publisher: p, extra: extra}
}

func (c *closing) Close() error {
	errs := []error{c.Publisher.Close()}
	for _, f := range c.extra {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}
