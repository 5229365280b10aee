package adapters

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/postrelay/postrelay/engine"
)

// Webhook request headers. Every metadata entry of the message is sent as
// WebhookMetadataHeaderPrefix + key, key and value percent-encoded
// (url.QueryEscape; decode them with url.QueryUnescape) so that any string
// makes a valid header. Only the timestamp and the body are signed.
const (
	// WebhookSignatureHeader carries "t=<unix seconds>,v1=<hex>", v1 being
	// HMAC-SHA256(secret, "<unix seconds>.<body>"). Check it with
	// VerifyWebhook.
	WebhookSignatureHeader = "Postrelay-Signature"
	// WebhookMessageIDHeader carries the message UUID (the record's
	// MessageID): the same on every attempt and on a replay, so a receiver
	// deduplicates on it.
	WebhookMessageIDHeader = "X-Postrelay-Message-Id"
	// WebhookTopicHeader carries the record's topic.
	WebhookTopicHeader = "X-Postrelay-Topic"
	// WebhookTimestampHeader carries the signed timestamp (unix seconds),
	// the t of the signature.
	WebhookTimestampHeader = "X-Postrelay-Timestamp"
	// WebhookMetadataHeaderPrefix prefixes each metadata entry's header.
	WebhookMetadataHeaderPrefix = "X-Postrelay-Meta-"
)

// Defaults of WebhookOptions and VerifyWebhook.
const (
	WebhookTimeoutDefault     = 10 * time.Second
	WebhookConcurrencyDefault = 16
	WebhookContentTypeDefault = "application/octet-stream"
	WebhookToleranceDefault   = 5 * time.Minute
)

// ErrWebhookStatus wraps the error of a webhook request the receiver
// answered with a status other than 2xx; the error names the status and
// the start of the response body.
var ErrWebhookStatus = errors.New("adapters: webhook answered")

// ErrWebhookSignature wraps every VerifyWebhook failure.
var ErrWebhookSignature = errors.New("adapters: webhook signature invalid")

// WebhookOptions configure http:// and https:// (a webhook sink: each
// message is POSTed to the URL).
type WebhookOptions struct {
	// Secret is the HMAC-SHA256 key the requests are signed with; required
	// for http:// and https:// URLs. In a config file, secret_env names an
	// environment variable holding it instead. Defaults to "" (refused).
	Secret string `json:"-" yaml:"-"`
	// Timeout bounds each request, response included; an expired request
	// is retried. Defaults to 10s.
	Timeout time.Duration `json:"timeout" yaml:"timeout"`
	// Concurrency is the number of requests in flight at once to this URL
	// (across all partitions of the process). Defaults to 16.
	Concurrency int `json:"concurrency" yaml:"concurrency"`
	// Retry4xx retries 4xx (and 3xx) answers like 5xx ones. Without it they
	// are permanent (engine.Permanent): the record is dead-lettered at
	// once. 408 and 429 are always retried. Defaults to false.
	Retry4xx bool `json:"retry_4xx" yaml:"retry_4xx"`
	// ContentType is the requests' Content-Type. Defaults to
	// "application/octet-stream".
	ContentType string `json:"content_type" yaml:"content_type"`
}

// webhookPublisher POSTs each message to a URL.
type webhookPublisher struct {
	url    string
	opts   WebhookOptions
	client *http.Client
	sem    chan struct{}
	closed atomic.Bool
}

func newWebhookPublisher(cfg Config) *webhookPublisher {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.Webhook.Concurrency
	return &webhookPublisher{
		url:  cfg.URL,
		opts: cfg.Webhook,
		client: &http.Client{
			Transport: tr,
			// A redirect is an answer like any other non-2xx one: POST
			// bodies are not re-sent to another address.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		sem: make(chan struct{}, cfg.Webhook.Concurrency),
	}
}

// Publish POSTs each message in turn and stops at the first failure.
func (p *webhookPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		if err := p.post(topic, msg); err != nil {
			return err
		}
	}
	return nil
}

func (p *webhookPublisher) post(topic string, msg *message.Message) error {
	if p.closed.Load() {
		return ErrPublisherClosed
	}
	ctx := msg.Context()
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	case <-ctx.Done():
		return fmt.Errorf("adapters: webhook %s: waiting for a free request slot: %w", Redact(p.url), context.Cause(ctx))
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(msg.Payload))
	if err != nil {
		return engine.Permanent(fmt.Errorf("adapters: webhook %s: %w", Redact(p.url), err))
	}
	now := time.Now()
	h := req.Header
	h.Set("Content-Type", p.opts.ContentType)
	h.Set("User-Agent", "postrelay")
	h.Set(WebhookMessageIDHeader, msg.UUID)
	h.Set(WebhookTopicHeader, url.QueryEscape(topic))
	h.Set(WebhookTimestampHeader, strconv.FormatInt(now.Unix(), 10))
	h.Set(WebhookSignatureHeader, WebhookSignature(p.opts.Secret, now, msg.Payload))
	for k, v := range msg.Metadata {
		h[WebhookMetadataHeaderPrefix+url.QueryEscape(k)] = []string{url.QueryEscape(v)}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return &redactedError{msg: fmt.Sprintf("adapters: webhook %s: message %s: %s", Redact(p.url), msg.UUID, RedactError(err)), err: err}
	}
	defer func() { _ = resp.Body.Close() }()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("%w %d for message %s (%s): %q", ErrWebhookStatus, resp.StatusCode, msg.UUID, Redact(p.url), strings.TrimSpace(string(snippet)))
	if resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests && !p.opts.Retry4xx {
		return engine.Permanent(err)
	}
	return err
}

func (p *webhookPublisher) Close() error {
	p.closed.Store(true)
	p.client.CloseIdleConnections()
	return nil
}

// WebhookSignature returns the Postrelay-Signature header value of body
// sent at t: "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>".
func WebhookSignature(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(webhookMAC(secret, ts, body))
}

func webhookMAC(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifyWebhook checks a webhook request's Postrelay-Signature header
// against its raw body and secret: one of its v1 values (a sender may
// send several) must be the HMAC of its t and the body, and t must be
// within tolerance of the local clock (0 or less means
// WebhookToleranceDefault), which bounds how long a captured request can
// be replayed. Deduplicate deliveries on X-Postrelay-Message-Id: the relay
// delivers at least once. Errors wrap ErrWebhookSignature.
func VerifyWebhook(secret, header string, body []byte, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = WebhookToleranceDefault
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: header %q has no t=<unix seconds>", ErrWebhookSignature, header)
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: header %q has no v1=<hex>", ErrWebhookSignature, header)
	}
	age := time.Since(time.Unix(unix, 0))
	if age > tolerance || age < -tolerance {
		return fmt.Errorf("%w: timestamp %d is %v from now, beyond the tolerance of %v", ErrWebhookSignature, unix, age.Round(time.Second), tolerance)
	}
	want := webhookMAC(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: no v1 signature matches the body and secret", ErrWebhookSignature)
}
