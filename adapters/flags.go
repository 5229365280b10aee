package adapters

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// RegisterFlags registers c's fields on fs, writing into c when fs is
// parsed. The flags and their defaults:
//
//	--broker                    URL (memory://)
//	--memory-print              Memory.Print (false)
//	--memory-output-buffer      Memory.OutputBuffer (1024)
//	--sql-payload-type          SQL.PayloadType (bytea)
//	--amqp-mode                 AMQP.Mode (queue)
//	--amqp-exchange             AMQP.Exchange (postrelay)
//	--nats-disable-msg-id       NATS.DisableMsgID (false)
//	--redis-max-len             Redis.MaxLen (0)
//	--kafka-client-id           Kafka.ClientID (postrelay)
//	--kafka-timeout             Kafka.Timeout (10s)
//	--webhook-secret            Webhook.Secret ("")
//	--webhook-timeout           Webhook.Timeout (10s)
//	--webhook-concurrency       Webhook.Concurrency (16)
//	--webhook-retry-4xx         Webhook.Retry4xx (false)
//
// Routes come only from files (LoadConfigFile) or Go. Prefer the
// environment (ConfigFromEnv: POSTRELAY_WEBHOOK_SECRET) or a file's
// secret_env to --webhook-secret, which other users can see in the process
// list.
//
// Values already in c are the flags' defaults, so a Config loaded from a
// file and then registered keeps the file's values unless a flag is set.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := c.WithDefaults()
	fs.StringVar(&c.URL, "broker", d.URL, "broker URL: memory://, postgres://, amqp://, nats://, redis://, kafka://host:port[,host:port]")
	fs.BoolVar(&c.Memory.Print, "memory-print", d.Memory.Print, "memory://: log every message published")
	fs.Int64Var(&c.Memory.OutputBuffer, "memory-output-buffer", d.Memory.OutputBuffer, "memory://: each subscriber's channel buffer")
	fs.StringVar(&c.SQL.PayloadType, "sql-payload-type", d.SQL.PayloadType, "postgres://: payload column type of created tables: bytea, json or jsonb")
	fs.StringVar(&c.AMQP.Mode, "amqp-mode", d.AMQP.Mode, "amqp://: queue (a durable queue per topic) or topic (a durable topic exchange)")
	fs.StringVar(&c.AMQP.Exchange, "amqp-exchange", d.AMQP.Exchange, "amqp://: the topic exchange in topic mode")
	fs.BoolVar(&c.NATS.DisableMsgID, "nats-disable-msg-id", d.NATS.DisableMsgID, "nats://: do not set Nats-Msg-Id (turns JetStream deduplication off)")
	fs.Int64Var(&c.Redis.MaxLen, "redis-max-len", d.Redis.MaxLen, "redis://: approximate maximum stream length, 0 for unlimited")
	fs.StringVar(&c.Kafka.ClientID, "kafka-client-id", d.Kafka.ClientID, "kafka://: producer client id")
	fs.DurationVar(&c.Kafka.Timeout, "kafka-timeout", d.Kafka.Timeout, "kafka://: produce request timeout")
	fs.StringVar(&c.Webhook.Secret, "webhook-secret", d.Webhook.Secret, "http(s)://: HMAC-SHA256 signing secret (prefer the environment variable)")
	fs.DurationVar(&c.Webhook.Timeout, "webhook-timeout", d.Webhook.Timeout, "http(s)://: request timeout")
	fs.IntVar(&c.Webhook.Concurrency, "webhook-concurrency", d.Webhook.Concurrency, "http(s)://: requests in flight at once")
	fs.BoolVar(&c.Webhook.Retry4xx, "webhook-retry-4xx", d.Webhook.Retry4xx, "http(s)://: retry 4xx answers instead of dead-lettering at once")
}

// EnvPrefixDefault is the prefix ConfigFromEnv uses when given "".
const EnvPrefixDefault = "POSTRELAY_"

// ConfigFromEnv reads a Config from environment variables named prefix +
// the RegisterFlags flag name in upper case with '_' for '-': with the
// default prefix "POSTRELAY_", POSTRELAY_BROKER, POSTRELAY_AMQP_MODE,
// POSTRELAY_KAFKA_TIMEOUT and so on. If <prefix>CONFIG names a file, it is
// loaded first (LoadConfigFile) and the variables override it. getenv is
// os.Getenv in programs; nil means os.Getenv. The result is validated;
// errors name the variable and its value (redacted).
func ConfigFromEnv(prefix string, getenv func(string) string) (Config, error) {
	if prefix == "" {
		prefix = EnvPrefixDefault
	}
	if getenv == nil {
		getenv = osGetenv
	}
	var c Config
	if path := getenv(prefix + "CONFIG"); path != "" {
		fc, err := LoadConfigFile(path)
		if err != nil {
			return Config{}, err
		}
		c = fc
	}
	fs := flag.NewFlagSet("env", flag.ContinueOnError)
	c.RegisterFlags(fs)
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil {
			return
		}
		name := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v := getenv(name)
		if v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%w: %s = %s: %s", ErrInvalidConfig, name, strconv.Quote(Redact(v)), Redact(e.Error()))
		}
	})
	if err != nil {
		return Config{}, err
	}
	if err := c.WithDefaults().Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

var osGetenv = os.Getenv
