package adapters_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

const hookSecret = "whsec_test"

// hookRequest is what a test webhook receiver saw.
type hookRequest struct {
	id, topic, key string
	recordID       int64
	body           []byte
	header         http.Header
	verifyErr      error
}

// hookServer is a webhook receiver: answer decides each response (nil:
// 204); every request is recorded, verified with VerifyWebhook.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []hookRequest
	ch     chan hookRequest
	answer func(w http.ResponseWriter, r hookRequest, n int) bool // true: handled
}

func newHookServer(t *testing.T, answer func(w http.ResponseWriter, r hookRequest, n int) bool) *hookServer {
	h := &hookServer{ch: make(chan hookRequest, 10000), answer: answer}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		hr := hookRequest{id: req.Header.Get(adapters.WebhookMessageIDHeader), body: body, header: req.Header.Clone()}
		hr.topic, _ = url.QueryUnescape(req.Header.Get(adapters.WebhookTopicHeader))
		hr.key, _ = url.QueryUnescape(req.Header.Get(adapters.WebhookMetadataHeaderPrefix + engine.MetadataKey))
		id, _ := url.QueryUnescape(req.Header.Get(adapters.WebhookMetadataHeaderPrefix + engine.MetadataRecordID))
		hr.recordID, _ = strconv.ParseInt(id, 10, 64)
		hr.verifyErr = adapters.VerifyWebhook(hookSecret, req.Header.Get(adapters.WebhookSignatureHeader), body, time.Minute)
		h.mu.Lock()
		n := len(h.reqs)
		h.reqs = append(h.reqs, hr)
		h.mu.Unlock()
		if h.answer != nil && h.answer(w, hr, n) {
			return
		}
		h.ch <- hr
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) requests() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.reqs...)
}

// accepted waits for n distinct message ids answered 2xx, checking every
// request's signature and per-key order of first acceptances.
func (h *hookServer) accepted(t *testing.T, n int, timeout time.Duration) map[string]hookRequest {
	t.Helper()
	got := map[string]hookRequest{}
	last := map[string]int64{}
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case r := <-h.ch:
			require.NoError(t, r.verifyErr)
			if _, dup := got[r.id]; dup {
				continue
			}
			if r.recordID > 0 { // published by the engine
				require.Greater(t, r.recordID, last[r.key], "key %s out of order", r.key)
			}
			last[r.key] = r.recordID
			got[r.id] = r
		case <-deadline:
			t.Fatalf("%d of %d webhook deliveries within %v", len(got), n, timeout)
		}
	}
	return got
}

func hookPublisher(t *testing.T, u string, opts adapters.WebhookOptions) message.Publisher {
	t.Helper()
	opts.Secret = hookSecret
	pub, err := adapters.NewPublisher(context.Background(), adapters.Config{URL: u, Webhook: opts})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// The receiver verifies the signature over timestamp and body; a changed
// body, another secret, a stale timestamp or a malformed header fail.
func TestWebhookSignatureVerifiable(t *testing.T) {
	t.Parallel()
	srv := newHookServer(t, nil)
	pub := hookPublisher(t, srv.URL+"/hook", adapters.WebhookOptions{})
	msg := message.NewMessage("m-1", []byte(`{"amount":12}`))
	msg.Metadata.Set("trace", "a b\r\nc")
	msg.Metadata.Set(engine.MetadataKey, "acct/1")
	require.NoError(t, pub.Publish("payments.sent", msg))
	r := srv.accepted(t, 1, 10*time.Second)["m-1"]
	require.Equal(t, `{"amount":12}`, string(r.body))
	require.Equal(t, "payments.sent", r.topic)
	require.Equal(t, "acct/1", r.key)
	v, err := url.QueryUnescape(r.header.Get(adapters.WebhookMetadataHeaderPrefix + "trace"))
	require.NoError(t, err)
	require.Equal(t, "a b\r\nc", v, "metadata survives header encoding")
	require.Equal(t, "application/octet-stream", r.header.Get("Content-Type"))
	sig := r.header.Get(adapters.WebhookSignatureHeader)
	require.Regexp(t, `^t=\d+,v1=[0-9a-f]{64}$`, sig)
	require.Equal(t, "t="+r.header.Get(adapters.WebhookTimestampHeader)+",", sig[:len("t=")+len(r.header.Get(adapters.WebhookTimestampHeader))+1])

	require.NoError(t, adapters.VerifyWebhook(hookSecret, sig, r.body, time.Minute))
	require.ErrorIs(t, adapters.VerifyWebhook(hookSecret, sig, []byte(`{"amount":13}`), time.Minute), adapters.ErrWebhookSignature)
	require.ErrorIs(t, adapters.VerifyWebhook("other", sig, r.body, time.Minute), adapters.ErrWebhookSignature)
	old := adapters.WebhookSignature(hookSecret, time.Now().Add(-10*time.Minute), r.body)
	err = adapters.VerifyWebhook(hookSecret, old, r.body, 5*time.Minute)
	require.ErrorIs(t, err, adapters.ErrWebhookSignature)
	require.Contains(t, err.Error(), "tolerance")
	require.ErrorIs(t, adapters.VerifyWebhook(hookSecret, "v1=00", r.body, 0), adapters.ErrWebhookSignature)
	// Rotation: a header with several v1 values passes if one matches.
	now := time.Now()
	rot := adapters.WebhookSignature("old-secret", now, r.body) + ",v1=" + adapters.WebhookSignature(hookSecret, now, r.body)[len("t=1234567890,v1="):]
	require.NoError(t, adapters.VerifyWebhook(hookSecret, rot, r.body, time.Minute))
}

// Through the engine: 5xx answers are retried until accepted; a 4xx answer
// dead-letters its record at once (one attempt) and the key's later records
// still go; every record of every key arrives in order, signed.
func TestWebhookRetries5xxDeadLetters4xxInOrder(t *testing.T) {
	t.Parallel()
	var fails atomic.Int32
	srv := newHookServer(t, func(w http.ResponseWriter, r hookRequest, n int) bool {
		switch {
		case string(r.body) == "reject":
			http.Error(w, "bad payload", http.StatusUnprocessableEntity)
			return true
		case r.key == "hk1" && fails.Add(1) <= 3:
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	pub := hookPublisher(t, srv.URL, adapters.WebhookOptions{})
	r := startRelay(t, pub, nil)
	recs := records("hooks.orders", "h", 0, 30, 3)
	recs = append(recs[:10:10], append([]engine.Record{{Topic: "hooks.orders", Key: "k2", Payload: []byte("reject"), MessageID: "rejected"}}, recs[10:]...)...)
	r.write(t, recs...)
	srv.accepted(t, 30, 30*time.Second)

	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-r.events:
			if e.Kind != engine.EventDeadLettered {
				continue
			}
			require.Equal(t, "rejected", e.MessageID)
			require.Equal(t, 1, e.Attempt, "4xx is not retried")
			require.ErrorIs(t, e.Err, engine.ErrPermanent)
			require.ErrorIs(t, e.Err, adapters.ErrWebhookStatus)
			require.Contains(t, e.Err.Error(), "422")
			n := 0
			for _, q := range srv.requests() {
				if q.id == "rejected" {
					n++
				}
			}
			require.Equal(t, 1, n, "the rejected record was posted once")
			require.GreaterOrEqual(t, fails.Load(), int32(3), "503s were answered and retried")
			return
		case <-deadline:
			t.Fatal("the 422 record was not dead-lettered")
		}
	}
}

// With Retry4xx a 4xx answer is retried like a 5xx one.
func TestWebhookRetry4xxConfigured(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	srv := newHookServer(t, func(w http.ResponseWriter, _ hookRequest, _ int) bool {
		if n.Add(1) <= 2 {
			http.Error(w, "not yet", http.StatusNotFound)
			return true
		}
		return false
	})
	pub := hookPublisher(t, srv.URL, adapters.WebhookOptions{Retry4xx: true})
	r := startRelay(t, pub, nil)
	r.write(t, records("hooks.x", "r", 0, 1, 1)...)
	srv.accepted(t, 1, 20*time.Second)
	require.Equal(t, int32(3), n.Load())
}

// A server slower than the route's Timeout: the request is abandoned and
// retried, and delivered once the server answers in time.
func TestWebhookSlowServerTimesOut(t *testing.T) {
	t.Parallel()
	var slow atomic.Int32
	slow.Store(2)
	release := make(chan struct{})
	srv := newHookServer(t, func(w http.ResponseWriter, r hookRequest, _ int) bool {
		if r.id == "s0" && slow.Add(-1) >= 0 {
			select { // slower than the timeout: hold the request until the test ends
			case <-release:
			case <-time.After(30 * time.Second):
			}
			return true
		}
		return false
	})
	t.Cleanup(func() { close(release) }) // before the server's Close, which waits for its handlers
	pub := hookPublisher(t, srv.URL, adapters.WebhookOptions{Timeout: 300 * time.Millisecond, Concurrency: 2})
	r := startRelay(t, pub, func(c *engine.Config) { c.PublishConcurrency = 8 })
	r.write(t, records("hooks.slow", "s", 0, 20, 5)...)
	srv.accepted(t, 20, 30*time.Second)
	failed := 0
	for failed < 2 {
		select {
		case e := <-r.events:
			if e.Kind == engine.EventFailed {
				require.Equal(t, "s0", e.MessageID)
				require.ErrorIs(t, e.Err, context.DeadlineExceeded)
				failed++
			}
			require.NotEqual(t, engine.EventDeadLettered, e.Kind)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d timed-out attempts seen, want 2", failed)
		}
	}
}

// Concurrency bounds the requests in flight to one webhook URL, however
// many keys the engine publishes at once.
func TestWebhookConcurrencyBounded(t *testing.T) {
	t.Parallel()
	var inFlight, maxInFlight atomic.Int32
	srv := newHookServer(t, func(w http.ResponseWriter, r hookRequest, _ int) bool {
		cur := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if cur <= m || maxInFlight.CompareAndSwap(m, cur) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond) // a slow receiver, not a test wait
		return false
	})
	pub := hookPublisher(t, srv.URL, adapters.WebhookOptions{Concurrency: 2})
	r := startRelay(t, pub, func(c *engine.Config) { c.PublishConcurrency = 8; c.Partitions = 1 })
	r.write(t, records("hooks.many", "c", 0, 40, 10)...)
	srv.accepted(t, 40, 30*time.Second)
	require.Equal(t, int32(2), maxInFlight.Load(), "two requests at once, never more")
}

// A server that closes connections without answering: the attempts fail
// with a connection error and are retried; once it answers, all arrive in
// order.
func TestWebhookConnectionClosedRetried(t *testing.T) {
	t.Parallel()
	var drops atomic.Int32
	srv := newHookServer(t, func(w http.ResponseWriter, _ hookRequest, _ int) bool {
		if drops.Add(1) <= 3 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.(*net.TCPConn).SetLinger(0)
				_ = conn.Close()
			}
			return true
		}
		return false
	})
	pub := hookPublisher(t, srv.URL, adapters.WebhookOptions{})
	r := startRelay(t, pub, nil)
	r.write(t, records("hooks.drop", "d", 0, 10, 2)...)
	srv.accepted(t, 10, 30*time.Second)
	for failed := 0; failed < 1; {
		select {
		case e := <-r.events:
			require.NotEqual(t, engine.EventDeadLettered, e.Kind)
			if e.Kind == engine.EventFailed {
				require.NotErrorIs(t, e.Err, engine.ErrPermanent)
				failed++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no failed attempt for a closed connection")
		}
	}
	require.GreaterOrEqual(t, drops.Load(), int32(4))
}

// Webhook options come from flags and environment variables too; a webhook
// URL without a secret is refused naming the field.
func TestWebhookConfigFromEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{"POSTRELAY_BROKER": "https://hooks.example/x", "POSTRELAY_WEBHOOK_SECRET": "s",
		"POSTRELAY_WEBHOOK_TIMEOUT": "2s", "POSTRELAY_WEBHOOK_CONCURRENCY": "3", "POSTRELAY_WEBHOOK_RETRY_4XX": "true"}
	c, err := adapters.ConfigFromEnv("", func(k string) string { return env[k] })
	require.NoError(t, err)
	require.Equal(t, adapters.WebhookOptions{Secret: "s", Timeout: 2 * time.Second, Concurrency: 3, Retry4xx: true}, c.Webhook)
	delete(env, "POSTRELAY_WEBHOOK_SECRET")
	_, err = adapters.ConfigFromEnv("", func(k string) string { return env[k] })
	require.ErrorIs(t, err, adapters.ErrInvalidConfig)
	require.Contains(t, err.Error(), "Webhook.Secret")
}
