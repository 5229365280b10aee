// Package adaptertest opens every broker postrelay supports against the real
// servers on this machine (and Kafka as franz-go's in-process kfake cluster
// on loopback TCP), each with a subscriber of that broker, for conformance
// and end-to-end tests. A server that is down fails the test with the
// command that starts it.
package adaptertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	amqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// Broker is one broker under test.
type Broker struct {
	// Name is the URL scheme (memory, postgres, amqp, nats, redis, kafka),
	// with a suffix for a variant ("amqp-topic").
	Name string
	// Subscribe subscribes to topic with a real subscriber of the broker
	// (the same Watermill library) and returns the adapters.Config whose
	// publisher, built by adapters.NewPublisher in this or another process,
	// reaches it. Everything it opens, and the topic's server-side
	// objects, are removed when the test ends. nil for memory://, which
	// lives in one process only: use Open.
	Subscribe func(t *testing.T, topic string) (adapters.Config, <-chan *message.Message)
	// Open returns a publisher built by adapters.NewPublisher for this
	// broker and the messages of topic, subscribed before it returns. Both
	// are closed when the test ends.
	Open func(t *testing.T, topic string) (message.Publisher, <-chan *message.Message)
}

// broker fills Open from subscribe.
func broker(name string, subscribe func(t *testing.T, topic string) (adapters.Config, <-chan *message.Message)) Broker {
	return Broker{Name: name, Subscribe: subscribe, Open: func(t *testing.T, topic string) (message.Publisher, <-chan *message.Message) {
		cfg, ch := subscribe(t, topic)
		return publisher(t, cfg), ch
	}}
}

// Local server addresses and how to start each.
const (
	AMQPURL  = "amqp://guest:guest@127.0.0.1:5672/"
	NATSURL  = "nats://127.0.0.1:4222"
	RedisURL = "redis://127.0.0.1:6379/0"
)

var startHints = map[string]string{
	"127.0.0.1:5672": "RabbitMQ is down: start it with `rabbitmq-server -detached` (or .ci/services rabbitmq)",
	"127.0.0.1:4222": "NATS is down: start it with `start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server` (or .ci/services nats)",
	"127.0.0.1:6379": `Redis is down: start it with redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" (or .ci/services redis)`,
}

// Require fails the test if nothing listens on addr.
func Require(t testing.TB, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("%s (%v)", startHints[addr], err)
	}
	_ = c.Close()
}

// Topic returns a unique topic name.
func Topic(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

func logger() watermill.LoggerAdapter { return watermill.NopLogger{} }

func subscribe(t *testing.T, sub message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		_ = sub.Close()
	})
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe %s: %v", topic, err)
	}
	return ch
}

func publisher(t *testing.T, cfg adapters.Config) message.Publisher {
	t.Helper()
	pub, err := adapters.NewPublisher(context.Background(), cfg)
	if err != nil {
		t.Fatalf("new publisher: %v", err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// Brokers returns every supported broker (and AMQP in both modes).
func Brokers() []Broker {
	return []Broker{Memory(), Postgres(), AMQP(), AMQPTopic(), NATS(), Redis(), Kafka()}
}

// Memory is memory:// with a gochannel subscriber on the same instance.
func Memory() Broker {
	return Broker{Name: "memory", Open: func(t *testing.T, topic string) (message.Publisher, <-chan *message.Message) {
		m := adapters.NewMemory(adapters.Config{URL: "memory://"})
		return m, subscribe(t, m, topic)
	}}
}

// Postgres is postgres:// (watermill-sql, default PostgreSQL schema) with
// a watermill-sql subscriber; the topic's tables are dropped at the end.
func Postgres() Broker {
	return broker("postgres", func(t *testing.T, topic string) (adapters.Config, <-chan *message.Message) {
		pool := pgtest.Pool(t)
		t.Cleanup(func() {
			ctx := context.Background()
			_, _ = pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_" + topic}.Sanitize())
			_, _ = pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{"watermill_offsets_" + topic}.Sanitize())
		})
		cfg := adapters.Config{URL: pgtest.URL()}
		sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
			SchemaAdapter:    adapters.SQLSchema(cfg),
			OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
			InitializeSchema: true,
			PollInterval:     10 * time.Millisecond,
		}, logger())
		if err != nil {
			t.Fatal(err)
		}
		return cfg, subscribe(t, sub, topic)
	})
}

// AMQP is amqp:// (a durable queue per topic) with an amqp subscriber; the
// queue is deleted at the end.
func AMQP() Broker {
	return broker("amqp", func(t *testing.T, topic string) (adapters.Config, <-chan *message.Message) {
		Require(t, "127.0.0.1:5672")
		t.Cleanup(func() { deleteAMQPQueue(topic) })
		sub, err := amqp.NewSubscriber(amqp.NewDurableQueueConfig(AMQPURL), logger())
		if err != nil {
			t.Fatal(err)
		}
		return adapters.Config{URL: AMQPURL}, subscribe(t, sub, topic)
	})
}

// AMQPTopic is amqp:// in topic mode (a durable topic exchange, the topic
// as routing key) with an amqp subscriber whose queue is bound to the
// exchange with the topic as binding key; the exchange and the queue are
// deleted at the end.
func AMQPTopic() Broker {
	return broker("amqp-topic", func(t *testing.T, topic string) (adapters.Config, <-chan *message.Message) {
		Require(t, "127.0.0.1:5672")
		exchange, queue := topic+"_exchange", topic+"_queue"
		t.Cleanup(func() { deleteAMQP(queue, exchange) })
		cfg := amqp.NewDurablePubSubConfig(AMQPURL, amqp.GenerateQueueNameConstant(queue))
		cfg.Exchange.GenerateName = amqp.GenerateExchangeNameConstant(exchange)
		cfg.Exchange.Type = "topic"
		cfg.QueueBind.GenerateRoutingKey = func(topic string) string { return topic }
		sub, err := amqp.NewSubscriber(cfg, logger())
		if err != nil {
			t.Fatal(err)
		}
		ch := subscribe(t, sub, topic)
		return adapters.Config{URL: AMQPURL, AMQP: adapters.AMQPOptions{Mode: "topic", Exchange: exchange}}, ch
	})
}

func deleteAMQPQueue(queue string) { deleteAMQP(queue, "") }

func deleteAMQP(queue, exchange string) {
	conn, err := amqp091.Dial(AMQPURL)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	_, _ = ch.QueueDelete(queue, false, false, false)
	if exchange != "" {
		_ = ch.ExchangeDelete(exchange, false, false)
	}
}

// NATS is nats:// (JetStream) with a JetStream subscriber; the topic's
// stream is deleted at the end.
func NATS() Broker {
	return broker("nats", func(t *testing.T, topic string) (adapters.Config, <-chan *message.Message) {
		Require(t, "127.0.0.1:4222")
		t.Cleanup(func() { deleteNATSStream(adapters.NATSStreamName(topic)) })
		sub, err := wnats.NewSubscriber(wnats.SubscriberConfig{
			URL:              NATSURL,
			SubscribersCount: 1,
			AckWaitTimeout:   30 * time.Second,
			CloseTimeout:     5 * time.Second,
			JetStream: wnats.JetStreamConfig{
				AutoProvision: true,
				DurablePrefix: "postrelay_test",
			},
		}, logger())
		if err != nil {
			t.Fatal(err)
		}
		return adapters.Config{URL: NATSURL}, subscribe(t, sub, topic)
	})
}

func deleteNATSStream(name string) {
	nc, err := nats.Connect(NATSURL)
	if err != nil {
		return
	}
	defer nc.Close()
	if js, err := nc.JetStream(); err == nil {
		_ = js.DeleteStream(name)
	}
}

// Redis is redis:// (streams) with a redisstream subscriber; the stream is
// deleted at the end.
func Redis() Broker {
	return broker("redis", func(t *testing.T, topic string) (adapters.Config, <-chan *message.Message) {
		Require(t, "127.0.0.1:6379")
		client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
		t.Cleanup(func() {
			_ = client.Del(context.Background(), topic).Err()
			_ = client.Close()
		})
		sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
			Client:        client,
			ConsumerGroup: "postrelay_test",
			Consumer:      "c1",
			OldestId:      "0",
		}, logger())
		if err != nil {
			t.Fatal(err)
		}
		return adapters.Config{URL: RedisURL}, subscribe(t, sub, topic)
	})
}

// KafkaPartitions is the partition count of the topic Kafka seeds.
const KafkaPartitions = 4

// Kafka is kafka:// against an in-process kfake cluster (one broker, the
// topic seeded with KafkaPartitions partitions) on loopback TCP, with a
// watermill-kafka subscriber reading every partition from the start. The
// cluster lives until the test ends.
func Kafka() Broker {
	return broker("kafka", func(t *testing.T, topic string) (adapters.Config, <-chan *message.Message) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(KafkaPartitions, topic))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		addr := c.ListenAddrs()[0]
		sc := kafka.DefaultSaramaSubscriberConfig()
		sc.Consumer.Offsets.Initial = sarama.OffsetOldest
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
			Brokers:               []string{addr},
			Unmarshaler:           adapters.KafkaMarshaler(),
			OverwriteSaramaConfig: sc,
		}, logger())
		if err != nil {
			t.Fatal(err)
		}
		return adapters.Config{URL: "kafka://" + addr}, subscribe(t, sub, topic)
	})
}
