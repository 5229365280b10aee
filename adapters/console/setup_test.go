package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/console"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

const testToken = "test-token-0123456789"

// bundle is what setup returns.
type bundle struct {
	pool   *pgxpool.Pool
	cfg    engine.Config
	writer *engine.Writer
	pub    *recorder.Publisher
	srv    *httptest.Server
	con    *console.Console
}

// engineConfig has intervals short enough for tests; failed records wait
// an hour unless retried from the console.
func engineConfig(schema string) engine.Config {
	return engine.Config{
		Schema:            schema,
		Partitions:        16,
		HeartbeatInterval: 100 * time.Millisecond,
		LeaseTTL:          time.Second,
		PollInterval:      200 * time.Millisecond,
		RetryInitial:      time.Hour,
		RetryMax:          time.Hour,
		StopTimeout:       5 * time.Second,
		MaxAttempts:       100,
	}
}

// setup migrates a fresh schema and serves a console on it; edit changes
// the console config first.
func setup(t *testing.T, edit func(*console.Config)) *bundle {
	t.Helper()
	pool, schema := pgtest.FreshSchema(t)
	cfg := engineConfig(schema)
	require.NoError(t, engine.Migrate(context.Background(), pool, cfg))
	ccfg := console.Config{Schema: schema, Token: testToken, LeaseTTL: cfg.LeaseTTL, SampleInterval: 100 * time.Millisecond}
	if edit != nil {
		edit(&ccfg)
	}
	con, err := console.New(pool, ccfg)
	require.NoError(t, err)
	srv := httptest.NewServer(con)
	t.Cleanup(srv.Close)
	return &bundle{pool: pool, cfg: cfg, writer: engine.NewWriter(cfg), pub: recorder.New(), srv: srv, con: con}
}

// startEngine runs a relay on b's schema until the test ends.
func (b *bundle) startEngine(t *testing.T) {
	t.Helper()
	b.startEngineConfig(t, b.cfg)
}

// startEngineConfig runs a relay with cfg until the test ends.
func (b *bundle) startEngineConfig(t *testing.T, cfg engine.Config) {
	t.Helper()
	eng, err := engine.New(b.pool, b.pub, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("engine did not stop within 30s")
			}
		})
	})
}

func (b *bundle) write(t *testing.T, recs ...engine.Record) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error { return b.writer.Write(ctx, tx, recs...) }))
}

func (b *bundle) ident(table string) string { return pgx.Identifier{b.cfg.Schema, table}.Sanitize() }

// addDeadLetters inserts n dead letters of topic and key with payload and
// the error text, ids from first on.
func (b *bundle) addDeadLetters(t *testing.T, first int64, n int, topic, key, payload, lastErr string) {
	t.Helper()
	_, err := b.pool.Exec(context.Background(), `INSERT INTO `+b.ident("dead_letters")+`
		(id, partition, key, topic, message_id, payload, metadata, created_at, attempts, last_error)
		SELECT i, `+b.ident("partition_for")+`($3), $3, $2, gen_random_uuid()::text, convert_to($4, 'UTF8'),
		       '{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tenant":"acme"}', now(), 10, $5
		FROM generate_series($1::bigint, $1::bigint + $6 - 1) AS i`, first, topic, key, payload, lastErr, n)
	require.NoError(t, err)
}

func (b *bundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.ident(table)).Scan(&n))
	return n
}

// answer is an HTTP answer with its JSON body.
type answer struct {
	code int
	body []byte
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(a.body, v), "body: %s", a.body)
}

func (a answer) field(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
		Field string `json:"field"`
	}
	a.decode(t, &e)
	return e.Field
}

func (b *bundle) get(t *testing.T, path string) answer {
	t.Helper()
	resp, err := http.Get(b.srv.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{code: resp.StatusCode, body: body}
}

// post sends body as JSON with the given token ("" for no header).
func (b *bundle) post(t *testing.T, path, token string, body any) answer {
	t.Helper()
	var r io.Reader
	switch v := body.(type) {
	case string:
		r = strings.NewReader(v)
	default:
		js, err := json.Marshal(v)
		require.NoError(t, err)
		r = bytes.NewReader(js)
	}
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+path, r)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{code: resp.StatusCode, body: out}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %v)", what, timeout, errors.Join(last))
		}
		select {
		case <-time.After(20 * time.Millisecond): // poll interval of a condition, not a wait for a result
		case <-t.Context().Done():
			t.Fatalf("%s: test ended", what)
		}
	}
}

// stuck is a stuck key as the API answers it.
type stuck struct {
	Partition int    `json:"partition"`
	RecordID  int64  `json:"record_id"`
	Key       string `json:"key"`
	Topic     string `json:"topic"`
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error"`
	State     string `json:"state"`
	Waiting   int    `json:"waiting"`
}

func (b *bundle) stuckKeys(t *testing.T, query string) []stuck {
	t.Helper()
	a := b.get(t, "/api/v1/stuck-keys"+query)
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	var v struct {
		StuckKeys []stuck `json:"stuck_keys"`
	}
	a.decode(t, &v)
	return v.StuckKeys
}

func recs(topic, key string, n int) []engine.Record {
	out := make([]engine.Record, n)
	for i := range out {
		out[i] = engine.Record{Topic: topic, Key: key, Payload: fmt.Appendf(nil, `{"key":%q,"n":%d}`, key, i)}
	}
	return out
}

func httpServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
