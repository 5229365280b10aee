package adapters_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/tcpproxy"
)

// sink is a publisher recording what it is given, for routing tests.
type sink struct {
	mu     sync.Mutex
	topics []string
}

func (s *sink) Publish(topic string, _ ...*message.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.topics = append(s.topics, topic)
	return nil
}

func (s *sink) Close() error { return nil }

func TestRoutePatternsAndPrecedence(t *testing.T) {
	t.Parallel()
	patterns := []string{"orders.created", "orders.*", "orders.**", "orders.eu.*", "orders.*.created",
		"*.eu.created", "*.eu.*", "audit.**", "**"}
	var routes []adapters.Route
	for _, p := range patterns {
		routes = append(routes, adapters.PublisherRoute(p, &sink{}))
	}
	rt, err := adapters.NewRouter(context.Background(), adapters.Config{Routes: routes})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, rt.Close()) })
	for topic, want := range map[string]string{
		"orders.created":        "orders.created",   // exact beats all
		"orders.updated":        "orders.*",         // fixed length beats **
		"orders.eu.created":     "orders.eu.*",      // longer literal prefix
		"orders.us.created":     "orders.*.created", // prefix 1, fixed, 2 literals
		"orders.us.deleted":     "orders.**",
		"orders.a.b.c":          "orders.**",
		"billing.eu.created":    "*.eu.created", // more literals in all
		"billing.eu.updated":    "*.eu.*",
		"audit.login":           "audit.**",
		"audit.eu.login.failed": "audit.**",
		"audit":                 "**", // ** needs at least one segment
		"orders":                "**",
		"x":                     "**",
	} {
		got, ok := rt.Match(topic)
		require.True(t, ok, topic)
		require.Equal(t, want, got, "topic %s", topic)
	}

	// Without a default route, a topic nothing matches has no route and
	// Publish says so, naming the topic.
	rt2, err := adapters.NewRouter(context.Background(), adapters.Config{Routes: routes[:len(routes)-1]})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, rt2.Close()) })
	_, ok := rt2.Match("billing.created")
	require.False(t, ok)
	err = rt2.Publish("billing.created", message.NewMessage("m1", nil))
	require.ErrorIs(t, err, adapters.ErrNoRoute)
	require.Contains(t, err.Error(), `"billing.created"`)
}

// Bad route configurations are refused before anything opens, the error
// naming the entry (index and pattern).
func TestRouteConfigRefusedNamingEntry(t *testing.T) {
	t.Parallel()
	ok := adapters.Route{Pattern: "orders.*", Config: adapters.Config{URL: "memory://"}}
	hook := func(p, secret string) adapters.Route {
		return adapters.Route{Pattern: p, Config: adapters.Config{URL: "https://example.test/hook", Webhook: adapters.WebhookOptions{Secret: secret}}}
	}
	mem := func(p string) adapters.Route {
		return adapters.Route{Pattern: p, Config: adapters.Config{URL: "memory://"}}
	}
	for _, tc := range []struct {
		name  string
		cfg   adapters.Config
		entry string
		why   string
	}{
		{"duplicate", adapters.Config{Routes: []adapters.Route{ok, mem("orders.*")}}, `Routes[1] (pattern "orders.*")`, `duplicates Routes[0] (pattern "orders.*")`},
		{"overlap", adapters.Config{Routes: []adapters.Route{mem("*.created"), mem("orders.*"), mem("*.a.*"), mem("*.*"), mem("*.*.b")}}, `Routes[4] (pattern "*.*.b")`, `overlaps Routes[2] (pattern "*.a.*") with equal precedence`},
		{"overlap open", adapters.Config{Routes: []adapters.Route{mem("a.*.**"), mem("a.**")}}, `Routes[1] (pattern "a.**")`, "overlaps"},
		{"no overlap", adapters.Config{Routes: []adapters.Route{mem("a.*.**"), mem("a.b.**"), mem("*.b.**"), mem("*.c.**"), mem("**")}}, "", ""},
		{"empty segment", adapters.Config{Routes: []adapters.Route{mem("a..b")}}, `Routes[0] (pattern "a..b")`, "empty segment"},
		{"unknown scheme", adapters.Config{Routes: []adapters.Route{ok, {Pattern: "audit.**", Config: adapters.Config{URL: "kafkaa://h:1"}}}}, `Routes[1] (pattern "audit.**")`, `unknown broker scheme "kafkaa"`},
		{"missing secret", adapters.Config{Routes: []adapters.Route{ok, hook("hooks.*", "")}}, `Routes[1] (pattern "hooks.*")`, "Webhook.Secret"},
		{"mixed wildcard", adapters.Config{Routes: []adapters.Route{mem("ord*.x")}}, `Routes[0] (pattern "ord*.x")`, "wildcards are whole segments"},
		{"double star inside", adapters.Config{Routes: []adapters.Route{mem("a.**.b")}}, `Routes[0] (pattern "a.**.b")`, "last segment"},
		{"empty pattern", adapters.Config{Routes: []adapters.Route{mem("")}}, `Routes[0] (pattern "")`, "empty"},
		{"no sink", adapters.Config{Routes: []adapters.Route{{Pattern: "a"}}}, `Routes[0] (pattern "a")`, "no sink"},
		{"two sinks", adapters.Config{Routes: []adapters.Route{{Pattern: "a", Config: adapters.Config{URL: "memory://"}, Handler: func(context.Context, *message.Message) error { return nil }}}}, `Routes[0] (pattern "a")`, "more than one sink"},
		{"two defaults", adapters.Config{URL: "memory://", Routes: []adapters.Route{mem("**")}}, `Routes[0] (pattern "**")`, "default route"},
		{"nested", adapters.Config{Routes: []adapters.Route{{Pattern: "a", Config: adapters.Config{URL: "memory://", Routes: []adapters.Route{ok}}}}}, `Routes[0] (pattern "a")`, "routes of its own"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pub, err := adapters.NewPublisher(context.Background(), tc.cfg)
			if tc.entry == "" {
				require.NoError(t, err)
				require.NoError(t, pub.Close())
				return
			}
			require.ErrorIs(t, err, adapters.ErrInvalidConfig)
			require.Contains(t, err.Error(), tc.entry)
			require.Contains(t, err.Error(), tc.why)
		})
	}
}

// Routes come from YAML and JSON files too: each entry a pattern, a url
// and that url's options; a webhook secret can come from the environment;
// a bad entry is named.
func TestRouteConfigFile(t *testing.T) {
	t.Setenv("POSTRELAY_TEST_HOOK_SECRET", "s3cret")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	cfg, err := adapters.LoadConfigFile(write("ok.yaml", `
url: memory://
routes:
  - pattern: "orders.*"
    url: nats://127.0.0.1:4222
    nats: {disable_msg_id: true}
  - pattern: "hooks.**"
    url: https://example.test/hook
    webhook: {secret_env: POSTRELAY_TEST_HOOK_SECRET, timeout: 3s, concurrency: 4, retry_4xx: true}
`))
	require.NoError(t, err)
	require.Equal(t, "memory://", cfg.URL)
	require.Len(t, cfg.Routes, 2)
	require.Equal(t, "orders.*", cfg.Routes[0].Pattern)
	require.Equal(t, "nats://127.0.0.1:4222", cfg.Routes[0].Config.URL)
	require.True(t, cfg.Routes[0].Config.NATS.DisableMsgID)
	w := cfg.Routes[1].Config.Webhook
	require.Equal(t, adapters.WebhookOptions{Secret: "s3cret", Timeout: 3 * time.Second, Concurrency: 4, Retry4xx: true}, w)

	cfg, err = adapters.LoadConfigFile(write("ok.json", `{"routes": [{"pattern": "a.*", "url": "redis://127.0.0.1:6379/0", "redis": {"max_len": 5}}]}`))
	require.NoError(t, err)
	require.Empty(t, cfg.URL, "no default route")
	require.Equal(t, int64(5), cfg.Routes[0].Config.Redis.MaxLen)

	for body, want := range map[string]string{
		"routes:\n  - {pattern: a.*, url: memory://}\n  - {pattern: a.*, url: memory://}\n":                `Routes[1] (pattern "a.*"): duplicates`,
		"routes:\n  - {pattern: a.*, url: https://h/x}\n":                                                  `Routes[0] (pattern "a.*")`,
		"routes:\n  - {pattern: a.*, url: https://h/x, webhook: {secret_env: POSTRELAY_TEST_UNSET_XYZ}}\n": `routes[0] (pattern "a.*"): webhook.secret_env`,
		"routes:\n  - {pattern: a.*, url: https://h/x, webhook: {secret: s, timeout: soon}}\n":             `routes[0] (pattern "a.*"): webhook.timeout "soon"`,
		"routes:\n  - {pattern: a.*, url: ftp://h/x}\n":                                                    `unknown broker scheme "ftp"`,
	} {
		_, err := adapters.LoadConfigFile(write("bad.yaml", body))
		require.ErrorIs(t, err, adapters.ErrInvalidConfig, body)
		require.Contains(t, err.Error(), want, body)
	}
}

// relay runs an engine over a fresh schema with pub until the test ends.
type relay struct {
	pool   *pgxpool.Pool
	cfg    engine.Config
	w      *engine.Writer
	events <-chan engine.Event
}

func startRelay(t *testing.T, pub message.Publisher, configure func(*engine.Config)) *relay {
	t.Helper()
	pool, schema := pgtest.FreshSchema(t)
	cfg := engine.Config{Schema: schema, Partitions: 4, HeartbeatInterval: 100 * time.Millisecond, LeaseTTL: time.Second,
		PollInterval: 100 * time.Millisecond, RetryInitial: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		MaxAttempts: 1000, PublishTimeout: 2 * time.Second, EventBuffer: 100000}
	if configure != nil {
		configure(&cfg)
	}
	ctx := context.Background()
	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	eng, err := engine.New(pool, pub, cfg)
	require.NoError(t, err)
	events, _ := eng.Events() // closed when Run returns
	r := &relay{pool: pool, cfg: cfg, w: engine.NewWriter(cfg), events: events}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("engine run: %v", err)
		}
	})
	return r
}

func (r *relay) write(t *testing.T, recs ...engine.Record) {
	t.Helper()
	ctx := context.Background()
	tx, err := r.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, r.w.Write(ctx, tx, recs...))
	require.NoError(t, tx.Commit(ctx))
}

// records returns records to - from of topic over keys keys; prefix starts
// their keys and message ids.
func records(topic, prefix string, from, to, keys int) []engine.Record {
	var recs []engine.Record
	for i := from; i < to; i++ {
		recs = append(recs, engine.Record{Topic: topic, Key: fmt.Sprint(prefix, "k", i%keys), Payload: fmt.Appendf(nil, "%d", i), MessageID: fmt.Sprint(prefix, i)})
	}
	return recs
}

// collector reads a subscription, acking, checking per-key order of first
// deliveries and counting duplicates.
type collector struct {
	t    *testing.T
	msgs <-chan *message.Message
	got  map[string]bool
	last map[string]int64
	dups int
}

func collect(t *testing.T, msgs <-chan *message.Message) *collector {
	return &collector{t: t, msgs: msgs, got: map[string]bool{}, last: map[string]int64{}}
}

// until reads until n distinct messages arrived, failing after timeout.
func (c *collector) until(n int, timeout time.Duration, what string) {
	c.t.Helper()
	deadline := time.After(timeout)
	for len(c.got) < n {
		select {
		case m := <-c.msgs:
			m.Ack()
			if c.got[m.UUID] {
				c.dups++
				continue
			}
			c.got[m.UUID] = true
			key := m.Metadata.Get(engine.MetadataKey)
			var id int64
			_, _ = fmt.Sscan(m.Metadata.Get(engine.MetadataRecordID), &id)
			require.Greater(c.t, id, c.last[key], "%s: key %s out of order", what, key)
			c.last[key] = id
		case <-deadline:
			c.t.Fatalf("%s: %d of %d delivered within %v", what, len(c.got), n, timeout)
		}
	}
}

// Two routes to two real brokers: "*" (one-segment topics) to NATS
// JetStream (whose test subscriber names its stream after the topic, which
// cannot hold '.'), audit.** to
// Redis through a TCP proxy. Redis is cut before the relay starts (its
// route cannot open) and stays cut while records of both are written: the
// NATS route's records all arrive meanwhile, the Redis route's fail and
// back off (none dead-lettered). Once the proxy lets connections through
// again, the Redis route opens and every record of both arrives, each key
// in order; nothing is lost on either.
func TestRouteOutageHoldsOnlyItsTopics(t *testing.T) {
	t.Parallel()
	adaptertest.Require(t, "127.0.0.1:6379")
	ordersTopic := adaptertest.Topic("orders")
	auditTopic := "audit.eu." + strings.TrimPrefix(adaptertest.Topic("r"), "r_")
	natsCfg, natsMsgs := adaptertest.NATS().Subscribe(t, ordersTopic)
	redisCfg, redisMsgs := adaptertest.Redis().Subscribe(t, auditTopic)

	proxy, err := tcpproxy.New("127.0.0.1:6379")
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	proxy.Cut()
	redisCfg.URL = "redis://" + proxy.Addr() + "/0"

	pub, err := adapters.NewPublisher(context.Background(), adapters.Config{Routes: []adapters.Route{
		{Pattern: "*", Config: natsCfg},
		{Pattern: "audit.**", Config: redisCfg},
	}})
	require.NoError(t, err, "a route that cannot open at start does not fail the others")
	t.Cleanup(func() { _ = pub.Close() })
	r := startRelay(t, pub, nil)

	r.write(t, append(records(auditTopic, "a", 0, 30, 3), records(ordersTopic, "o", 0, 30, 3)...)...)
	orders := collect(t, natsMsgs)
	orders.until(30, 30*time.Second, "orders while redis is cut")

	failures := 0
	for failures < 3 {
		select {
		case e := <-r.events:
			require.NotEqual(t, engine.EventDeadLettered, e.Kind, "%v", e.Err)
			if e.Kind == engine.EventFailed {
				require.Equal(t, auditTopic, e.Topic, "only the cut route's topic fails")
				require.ErrorIs(t, e.Err, adapters.ErrRouteUnavailable)
				failures++
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d failed attempts of the cut route", failures)
		}
	}
	// More of both while still cut: orders keep flowing.
	r.write(t, append(records(auditTopic, "a", 30, 40, 3), records(ordersTopic, "o", 30, 40, 3)...)...)
	orders.until(40, 30*time.Second, "orders written during the cut")
	select {
	case m := <-redisMsgs:
		t.Fatalf("audit message %s arrived through a cut proxy", m.UUID)
	default:
	}

	proxy.Restore()
	audit := collect(t, redisMsgs)
	audit.until(40, 60*time.Second, "audit after the proxy restored")
	t.Logf("redis route cut: %d failed attempts of its topic meanwhile, 40 orders delivered during the cut, 40 audit after (duplicates orders %d, audit %d)",
		failures, orders.dups, audit.dups)
}

// A topic no route matches, with no default route, is retried and then
// dead-lettered with ErrNoRoute's text naming the topic; routed topics flow.
func TestRouteNoRouteDeadLetters(t *testing.T) {
	t.Parallel()
	got := make(chan *message.Message, 10)
	pub, err := adapters.NewPublisher(context.Background(), adapters.Config{Routes: []adapters.Route{
		adapters.HandlerRoute("known.*", func(_ context.Context, m *message.Message) error { got <- m; return nil }),
	}})
	require.NoError(t, err)
	r := startRelay(t, pub, func(c *engine.Config) { c.MaxAttempts = 2 })
	r.write(t, engine.Record{Topic: "unknown.x", Key: "k", MessageID: "lost", Payload: []byte{}}, engine.Record{Topic: "known.x", Key: "j", MessageID: "ok", Payload: []byte{}})
	select {
	case m := <-got:
		require.Equal(t, "ok", m.UUID)
	case <-time.After(10 * time.Second):
		t.Fatal("routed record not delivered")
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-r.events:
			if e.Kind != engine.EventDeadLettered {
				continue
			}
			require.Equal(t, "lost", e.MessageID)
			require.True(t, errors.Is(e.Err, adapters.ErrNoRoute), "%v", e.Err)
			var last string
			require.NoError(t, r.pool.QueryRow(context.Background(),
				fmt.Sprintf(`SELECT last_error FROM %q.dead_letters`, r.cfg.Schema)).Scan(&last))
			require.Contains(t, last, `no route for topic "unknown.x"`)
			return
		case <-deadline:
			t.Fatal("unrouted record not dead-lettered")
		}
	}
}
