package adapters

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalidConfig wraps every configuration error.
var ErrInvalidConfig = errors.New("adapters: invalid broker config")

// Defaults of Config.
const (
	URLDefault                = "memory://"
	MemoryOutputBufferDefault = 1024
	SQLPayloadTypeDefault     = "bytea"
	AMQPModeDefault           = "queue"
	AMQPExchangeDefault       = "postrelay"
	KafkaClientIDDefault      = "postrelay"
	KafkaTimeoutDefault       = 10 * time.Second
)

// Config chooses and configures a broker. The URL's scheme picks the
// adapter; the option struct of that adapter refines it.
type Config struct {
	// URL is the broker address: memory://, postgres:// (or postgresql://),
	// amqp:// (or amqps://), nats://, redis:// (or rediss://),
	// kafka://host:port[,host:port], or http:// / https:// for a webhook.
	// With Routes, it is the default route (topics no pattern matches),
	// and without it such topics have no route. Defaults to "memory://"
	// without Routes, to "" (no default route) with them.
	URL string `json:"url" yaml:"url"`
	// Logger receives the broker library's logs (through Watermill's slog
	// adapter), every password redacted. Defaults to nil (discard).
	Logger *slog.Logger `json:"-" yaml:"-"`

	Memory MemoryOptions `json:"memory" yaml:"memory"`
	SQL    SQLOptions    `json:"sql" yaml:"sql"`
	AMQP   AMQPOptions   `json:"amqp" yaml:"amqp"`
	NATS   NATSOptions   `json:"nats" yaml:"nats"`
	Redis  RedisOptions  `json:"redis" yaml:"redis"`
	Kafka  KafkaOptions  `json:"kafka" yaml:"kafka"`
	// Webhook configures http:// and https:// URLs.
	Webhook WebhookOptions `json:"webhook" yaml:"webhook"`

	// Routes, when set, send each topic to the sink of the route its
	// pattern matches (see Route), URL being the default route; then
	// NewPublisher returns a *Router. In a file, each entry is a pattern,
	// a url and that url's options. Defaults to none (every topic to URL).
	Routes []Route `json:"-" yaml:"-"`
}

// MemoryOptions configure memory:// (Watermill's gochannel).
type MemoryOptions struct {
	// Print logs every message published (topic, UUID, key, payload size)
	// at info level. The URL parameter memory://?print=true (or false)
	// overrides it. Defaults to false.
	Print bool `json:"print" yaml:"print"`
	// OutputBuffer is each subscriber's channel buffer. Defaults to 1024.
	OutputBuffer int64 `json:"output_buffer" yaml:"output_buffer"`
}

// SQLOptions configure postgres:// (watermill-sql/v4, default PostgreSQL
// schema: one table "watermill_<topic>" per topic in the URL's database).
type SQLOptions struct {
	// PayloadType is the payload column type of tables the publisher
	// creates: "bytea" takes any payload, "json" or "jsonb" only JSON
	// documents.
	// Defaults to "bytea".
	PayloadType string `json:"payload_type" yaml:"payload_type"`
}

// AMQPOptions configure amqp:// (postrelay's publisher on amqp091-go, in
// watermill-amqp's wire format). Publisher confirms are always on: Publish
// returns only once RabbitMQ has taken the message.
type AMQPOptions struct {
	// Mode is "queue" (a durable queue per topic, published through the
	// default exchange) or "topic" (a durable topic exchange, the topic as
	// routing key). Defaults to "queue".
	Mode string `json:"mode" yaml:"mode"`
	// Exchange is the topic exchange's name in "topic" mode. Defaults to
	// "postrelay".
	Exchange string `json:"exchange" yaml:"exchange"`
}

// NATSOptions configure nats:// (watermill-nats/v2 with JetStream).
type NATSOptions struct {
	// DisableMsgID turns off the Nats-Msg-Id header (the message UUID),
	// with which JetStream drops duplicates a redelivery after a relay
	// crash would create within the stream's duplicate window. Defaults to
	// false (deduplication on).
	DisableMsgID bool `json:"disable_msg_id" yaml:"disable_msg_id"`
}

// RedisOptions configure redis:// (watermill-redisstream).
type RedisOptions struct {
	// MaxLen caps each stream's length (approximate trimming); 0 means
	// unlimited. Defaults to 0.
	MaxLen int64 `json:"max_len" yaml:"max_len"`
}

// KafkaOptions configure kafka:// (watermill-kafka/v3, sarama sync producer
// with acks from all in-sync replicas).
type KafkaOptions struct {
	// ClientID is the producer's client id. Defaults to "postrelay".
	ClientID string `json:"client_id" yaml:"client_id"`
	// Timeout bounds each produce request. Defaults to 10s.
	Timeout time.Duration `json:"timeout" yaml:"timeout"`
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.URL = strings.TrimSpace(c.URL)
	if len(c.Routes) == 0 {
		c.URL = cmp.Or(c.URL, URLDefault)
	}
	c.Webhook.Timeout = cmp.Or(c.Webhook.Timeout, WebhookTimeoutDefault)
	c.Webhook.Concurrency = cmp.Or(c.Webhook.Concurrency, WebhookConcurrencyDefault)
	c.Webhook.ContentType = cmp.Or(c.Webhook.ContentType, WebhookContentTypeDefault)
	c.Memory.OutputBuffer = cmp.Or(c.Memory.OutputBuffer, MemoryOutputBufferDefault)
	c.SQL.PayloadType = cmp.Or(strings.ToLower(c.SQL.PayloadType), SQLPayloadTypeDefault)
	c.AMQP.Mode = cmp.Or(strings.ToLower(c.AMQP.Mode), AMQPModeDefault)
	c.AMQP.Exchange = cmp.Or(c.AMQP.Exchange, AMQPExchangeDefault)
	c.Kafka.ClientID = cmp.Or(c.Kafka.ClientID, KafkaClientIDDefault)
	c.Kafka.Timeout = cmp.Or(c.Kafka.Timeout, KafkaTimeoutDefault)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks the URL and the options, naming the bad field and value
// (with any password redacted).
func (c Config) Validate() error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: %s = %v: %s", ErrInvalidConfig, field, v, why)
	}
	if len(c.Routes) > 0 {
		if err := c.validateRoutes(); err != nil {
			return err
		}
	}
	if c.URL != "" || len(c.Routes) == 0 {
		p, err := parseURL(c.URL)
		if err != nil {
			return err
		}
		if (p.scheme == "http" || p.scheme == "https") && c.Webhook.Secret == "" {
			return bad("Webhook.Secret", `""`, "a webhook URL ("+Redact(c.URL)+") needs a signing secret")
		}
	}
	switch {
	case c.Webhook.Timeout < 0:
		return bad("Webhook.Timeout", c.Webhook.Timeout, "must not be negative")
	case c.Webhook.Concurrency < 0:
		return bad("Webhook.Concurrency", c.Webhook.Concurrency, "must not be negative")
	case c.SQL.PayloadType != "bytea" && c.SQL.PayloadType != "json" && c.SQL.PayloadType != "jsonb":
		return bad("SQL.PayloadType", strconv.Quote(c.SQL.PayloadType), `want "bytea", "json" or "jsonb"`)
	case c.AMQP.Mode != "queue" && c.AMQP.Mode != "topic":
		return bad("AMQP.Mode", strconv.Quote(c.AMQP.Mode), `want "queue" or "topic"`)
	case c.Redis.MaxLen < 0:
		return bad("Redis.MaxLen", c.Redis.MaxLen, "must not be negative")
	case c.Kafka.Timeout < 0:
		return bad("Kafka.Timeout", c.Kafka.Timeout, "must not be negative")
	case c.Memory.OutputBuffer < 0:
		return bad("Memory.OutputBuffer", c.Memory.OutputBuffer, "must not be negative")
	}
	return nil
}

// Schemes lists the URL schemes NewPublisher accepts.
var Schemes = []string{"memory", "postgres", "postgresql", "amqp", "amqps", "nats", "redis", "rediss", "kafka", "http", "https"}

// parsedURL is a validated broker URL.
type parsedURL struct {
	scheme string
	u      *url.URL
	hosts  []string // kafka: the broker list
}

// parseURL validates a broker URL. Errors show the URL redacted.
func parseURL(raw string) (parsedURL, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return parsedURL{}, fmt.Errorf("%w: broker URL is empty (want one of %s)", ErrInvalidConfig, schemeList())
	}
	var u *url.URL
	var err error
	if len(raw) >= 8 && strings.EqualFold(raw[:8], "kafka://") {
		// A broker list is no valid URL host: take it as it is.
		hosts := raw[8:]
		if i := strings.IndexAny(hosts, "/?#"); i >= 0 {
			if rest := hosts[i:]; rest != "/" {
				return parsedURL{}, fmt.Errorf("%w: broker URL %q: kafka:// takes only host:port[,host:port], not %q (set options through KafkaOptions)", ErrInvalidConfig, Redact(raw), Redact(rest))
			}
			hosts = hosts[:i]
		}
		if strings.Contains(hosts, "@") {
			return parsedURL{}, fmt.Errorf("%w: broker URL %q: kafka:// takes no user info", ErrInvalidConfig, Redact(raw))
		}
		u = &url.URL{Scheme: "kafka", Host: hosts}
		if hosts == "" {
			return parsedURL{}, fmt.Errorf("%w: broker URL %q has no kafka brokers (want kafka://host:port[,host:port])", ErrInvalidConfig, Redact(raw))
		}
	} else {
		u, err = url.Parse(raw)
	}
	if err != nil {
		return parsedURL{}, fmt.Errorf("%w: broker URL %q is malformed", ErrInvalidConfig, Redact(raw))
	}
	p := parsedURL{scheme: strings.ToLower(u.Scheme), u: u}
	switch p.scheme {
	case "memory":
		for k, vs := range u.Query() {
			if k != "print" {
				return p, fmt.Errorf("%w: broker URL %q: unknown memory:// parameter %q (want print)", ErrInvalidConfig, Redact(raw), Redact(k))
			}
			if _, err := strconv.ParseBool(vs[len(vs)-1]); err != nil {
				return p, fmt.Errorf("%w: broker URL %q: memory:// print=%q is not a boolean", ErrInvalidConfig, Redact(raw), Redact(vs[len(vs)-1]))
			}
		}
		return p, nil
	case "postgres", "postgresql", "amqp", "amqps", "nats", "redis", "rediss", "http", "https":
		if u.Host == "" {
			return p, fmt.Errorf("%w: broker URL %q has no host", ErrInvalidConfig, Redact(raw))
		}
		return p, nil
	case "kafka":
		for _, h := range strings.Split(u.Host, ",") {
			h = strings.TrimSpace(h)
			host, port, err := splitHostPort(h)
			if err != nil || host == "" {
				return p, fmt.Errorf("%w: broker URL %q: kafka broker %q must be host:port", ErrInvalidConfig, Redact(raw), h)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return p, fmt.Errorf("%w: broker URL %q: kafka broker %q has a bad port", ErrInvalidConfig, Redact(raw), h)
			}
			p.hosts = append(p.hosts, h)
		}
		return p, nil
	case "":
		return p, fmt.Errorf("%w: broker URL %q has no scheme (want one of %s)", ErrInvalidConfig, Redact(raw), schemeList())
	default:
		return p, fmt.Errorf("%w: unknown broker scheme %q in %q (want one of %s)", ErrInvalidConfig, p.scheme, Redact(raw), schemeList())
	}
}

func splitHostPort(h string) (string, string, error) {
	i := strings.LastIndex(h, ":")
	if i < 0 {
		return "", "", errors.New("no port")
	}
	host, port := h[:i], h[i+1:]
	return strings.Trim(host, "[]"), port, nil
}

func schemeList() string {
	return "memory://, postgres://, amqp://, nats://, redis://, kafka://, http://, https://"
}

// LoadConfigFile reads a Config from a YAML (.yaml, .yml) or JSON (.json)
// file. Durations are strings such as "10s".
func LoadConfigFile(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: read config file: %w", ErrInvalidConfig, err)
	}
	return parseConfig(b, filepath.Ext(path), path)
}

func parseConfig(b []byte, ext, name string) (Config, error) {
	var c Config
	switch strings.ToLower(ext) {
	case ".yaml", ".yml":
		var f fileConfig
		if err := yaml.Unmarshal(b, &f); err != nil {
			return c, fmt.Errorf("%w: config file %s: %s", ErrInvalidConfig, name, Redact(err.Error()))
		}
		return f.toConfig(name)
	case ".json":
		var f fileConfig
		if err := json.Unmarshal(b, &f); err != nil {
			return c, fmt.Errorf("%w: config file %s: %s", ErrInvalidConfig, name, Redact(err.Error()))
		}
		return f.toConfig(name)
	default:
		return c, fmt.Errorf("%w: config file %s: extension %q, want .yaml, .yml or .json", ErrInvalidConfig, name, ext)
	}
}

// fileConfig is Config as written in files (durations as strings).
type fileConfig struct {
	URL    string        `json:"url" yaml:"url"`
	Memory MemoryOptions `json:"memory" yaml:"memory"`
	SQL    SQLOptions    `json:"sql" yaml:"sql"`
	AMQP   AMQPOptions   `json:"amqp" yaml:"amqp"`
	NATS   NATSOptions   `json:"nats" yaml:"nats"`
	Redis  RedisOptions  `json:"redis" yaml:"redis"`
	Kafka  struct {
		ClientID string `json:"client_id" yaml:"client_id"`
		Timeout  string `json:"timeout" yaml:"timeout"`
	} `json:"kafka" yaml:"kafka"`
	Webhook fileWebhook `json:"webhook" yaml:"webhook"`
	Routes  []fileRoute `json:"routes" yaml:"routes"`
}

// fileWebhook is WebhookOptions as written in files.
type fileWebhook struct {
	Secret      string `json:"secret" yaml:"secret"`
	SecretEnv   string `json:"secret_env" yaml:"secret_env"`
	Timeout     string `json:"timeout" yaml:"timeout"`
	Concurrency int    `json:"concurrency" yaml:"concurrency"`
	Retry4xx    bool   `json:"retry_4xx" yaml:"retry_4xx"`
	ContentType string `json:"content_type" yaml:"content_type"`
}

// fileRoute is a Route as written in files: a pattern and a broker's
// settings.
type fileRoute struct {
	Pattern    string `json:"pattern" yaml:"pattern"`
	fileConfig `yaml:",inline"`
}

func (f fileConfig) options(name, where string) (Config, error) {
	c := Config{URL: f.URL, Memory: f.Memory, SQL: f.SQL, AMQP: f.AMQP, NATS: f.NATS, Redis: f.Redis}
	c.Kafka.ClientID = f.Kafka.ClientID
	if f.Kafka.Timeout != "" {
		d, err := time.ParseDuration(f.Kafka.Timeout)
		if err != nil {
			return c, fmt.Errorf("%w: config file %s: %skafka.timeout %q is not a duration", ErrInvalidConfig, name, where, f.Kafka.Timeout)
		}
		c.Kafka.Timeout = d
	}
	w := f.Webhook
	c.Webhook = WebhookOptions{Secret: w.Secret, Concurrency: w.Concurrency, Retry4xx: w.Retry4xx, ContentType: w.ContentType}
	if w.SecretEnv != "" {
		if w.Secret != "" {
			return c, fmt.Errorf("%w: config file %s: %swebhook: set secret or secret_env, not both", ErrInvalidConfig, name, where)
		}
		c.Webhook.Secret = osGetenv(w.SecretEnv)
		if c.Webhook.Secret == "" {
			return c, fmt.Errorf("%w: config file %s: %swebhook.secret_env: environment variable %s is empty or unset", ErrInvalidConfig, name, where, w.SecretEnv)
		}
	}
	if w.Timeout != "" {
		d, err := time.ParseDuration(w.Timeout)
		if err != nil {
			return c, fmt.Errorf("%w: config file %s: %swebhook.timeout %q is not a duration", ErrInvalidConfig, name, where, w.Timeout)
		}
		c.Webhook.Timeout = d
	}
	return c, nil
}

func (f fileConfig) toConfig(name string) (Config, error) {
	c, err := f.options(name, "")
	if err != nil {
		return c, err
	}
	for i, fr := range f.Routes {
		where := fmt.Sprintf("routes[%d] (pattern %s): ", i, strconv.Quote(fr.Pattern))
		if len(fr.Routes) > 0 {
			return c, fmt.Errorf("%w: config file %s: %sa route cannot have routes of its own", ErrInvalidConfig, name, where)
		}
		rc, err := fr.options(name, where)
		if err != nil {
			return c, err
		}
		c.Routes = append(c.Routes, Route{Pattern: fr.Pattern, Config: rc})
	}
	if err := c.WithDefaults().Validate(); err != nil {
		return c, fmt.Errorf("config file %s: %w", name, err)
	}
	return c, nil
}
