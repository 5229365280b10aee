package adapters_test

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"amqp://u:p@ss/w:rd@host/vh", "amqp://u:xxxxx@host/vh"},
		{"nats://my user:two words@h:4222", "nats://my user:xxxxx@h:4222"},
		{"redis://:pw@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"postgres://u@h/db?sslpassword=a&password=b&x=1", "postgres://u@h/db?sslpassword=xxxxx&password=xxxxx&x=1"},
		{"postgres://u:p@h/db?PASSWORD=b", "postgres://u:xxxxx@h/db?PASSWORD=xxxxx"},
		{"kafka://a:1,b:2", "kafka://a:1,b:2"},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"memory://?print=true", "memory://?print=true"},
		{"dial \"amqp://u:line\nbreak@h/\": refused", "dial \"amqp://u:xxxxx@h/\": refused"},
	} {
		require.Equal(t, tc.want, adapters.Redact(tc.in), tc.in)
	}
}

func TestURLSyntaxErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, want string }{
		{"kafka://u:topsecret@h:9092", "takes no user info"},
		{"kafka://h:9092/path", `not "/path"`},
		{"kafka://h:9092?acks=1", `not "?acks=1"`},
		{"memory://?color=red", `unknown memory:// parameter "color"`},
		{"memory://?print=maybe", `print="maybe" is not a boolean`},
	} {
		err := adapters.Config{URL: tc.url}.WithDefaults().Validate()
		require.ErrorIs(t, err, adapters.ErrInvalidConfig, tc.url)
		require.ErrorContains(t, err, tc.want, tc.url)
		require.NotContains(t, err.Error(), "topsecret")
	}
	require.NoError(t, adapters.Config{URL: "kafka://h:9092/"}.WithDefaults().Validate())
	require.NoError(t, adapters.Config{URL: "memory://?print=1"}.WithDefaults().Validate())
}

// A connection error keeps its chain (errors.As sees the network error)
// while its text hides the password.
func TestConnectErrorsKeepTheirChain(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = adapters.NewPublisher(ctx, adapters.Config{URL: "redis://:chain-secret@" + addr + "/0"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "chain-secret")
	require.Contains(t, err.Error(), "redis://:xxxxx@"+addr)
	var op *net.OpError
	require.True(t, errors.As(err, &op), "%T: %v", errors.Unwrap(err), err)
	require.False(t, errors.Is(err, adapters.ErrInvalidConfig))
}

func TestMemoryPrintFromURL(t *testing.T) {
	t.Parallel()
	var logged strings.Builder
	cfg := adapters.Config{URL: "memory://?print=true", Logger: newTextLogger(&logged)}
	pub, err := adapters.NewPublisher(context.Background(), cfg)
	require.NoError(t, err)
	require.NoError(t, pub.Publish("t", newKeyed("u-1", "k-1")))
	require.NoError(t, pub.Close())
	require.Contains(t, logged.String(), "message_id=u-1")
	require.Contains(t, logged.String(), "key=k-1")
}

func TestRegisterFlags(t *testing.T) {
	t.Parallel()
	c := adapters.Config{AMQP: adapters.AMQPOptions{Exchange: "from-file"}}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"--broker", "amqp://guest:guest@127.0.0.1:5672/", "--amqp-mode", "topic", "--kafka-timeout", "3s", "--redis-max-len", "5"}))
	require.Equal(t, "amqp://guest:guest@127.0.0.1:5672/", c.URL)
	require.Equal(t, "topic", c.AMQP.Mode)
	require.Equal(t, "from-file", c.AMQP.Exchange, "values in c are the flags' defaults")
	require.Equal(t, 3*time.Second, c.Kafka.Timeout)
	require.Equal(t, int64(5), c.Redis.MaxLen)
	require.Equal(t, adapters.KafkaClientIDDefault, c.Kafka.ClientID)
	require.NoError(t, c.Validate())
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "broker.yaml")
	require.NoError(t, os.WriteFile(file, []byte("url: redis://127.0.0.1:6379/0\nredis:\n  max_len: 10\namqp:\n  exchange: ex\n"), 0o600))
	env := map[string]string{
		"APP_CONFIG":        file,
		"APP_BROKER":        "amqp://guest:guest@127.0.0.1:5672/",
		"APP_AMQP_MODE":     "topic",
		"APP_KAFKA_TIMEOUT": "2s",
	}
	c, err := adapters.ConfigFromEnv("APP_", func(k string) string { return env[k] })
	require.NoError(t, err)
	require.Equal(t, "amqp://guest:guest@127.0.0.1:5672/", c.URL, "the variable overrides the file")
	require.Equal(t, "topic", c.AMQP.Mode)
	require.Equal(t, "ex", c.AMQP.Exchange, "from the file")
	require.Equal(t, int64(10), c.Redis.MaxLen, "from the file")
	require.Equal(t, 2*time.Second, c.Kafka.Timeout)

	_, err = adapters.ConfigFromEnv("APP_", func(k string) string {
		return map[string]string{"APP_REDIS_MAX_LEN": "lots"}[k]
	})
	require.ErrorIs(t, err, adapters.ErrInvalidConfig)
	require.ErrorContains(t, err, `APP_REDIS_MAX_LEN = "lots"`)

	_, err = adapters.ConfigFromEnv("", func(k string) string {
		return map[string]string{"POSTRELAY_BROKER": "mqtt://u:env-secret@h", "POSTRELAY_AMQP_MODE": "queue"}[k]
	})
	require.ErrorContains(t, err, `unknown broker scheme "mqtt"`)
	require.NotContains(t, err.Error(), "env-secret")
}

func newTextLogger(w *strings.Builder) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func newKeyed(uuid, key string) *message.Message {
	m := message.NewMessage(uuid, []byte("payload"))
	m.Metadata.Set(engine.MetadataKey, key)
	return m
}
