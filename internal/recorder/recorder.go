// Package recorder is a Watermill publisher for tests that records every
// message it accepts, can be told to fail, and lets tests wait for
// conditions with deadlines instead of sleeping.
package recorder

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Delivery is one accepted message.
type Delivery struct {
	Topic    string
	UUID     string
	Key      string
	RecordID int64
	Attempt  int
	Payload  string
	Metadata map[string]string
	At       time.Time
}

// Publisher records deliveries. Fail, when set, is asked before each
// publish and may return an error to reject the message.
type Publisher struct {
	mu         sync.Mutex
	changed    chan struct{}
	deliveries []Delivery
	attempts   int
	fail       func(topic string, msg *message.Message) error
	delay      time.Duration
	inFlight   int
	maxFlight  int
}

// MaxInFlight returns the most Publish calls that were in progress at once.
func (p *Publisher) MaxInFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxFlight
}

// New returns an empty recorder.
func New() *Publisher { return &Publisher{changed: make(chan struct{})} }

// SetFail sets the failure function (nil: never fail).
func (p *Publisher) SetFail(f func(topic string, msg *message.Message) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = f
}

// SetDelay makes every Publish take at least d (a simulated round trip).
func (p *Publisher) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// Publish implements message.Publisher.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	fail, delay := p.fail, p.delay
	p.inFlight++
	p.maxFlight = max(p.maxFlight, p.inFlight)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inFlight--
		p.mu.Unlock()
	}()
	if delay > 0 {
		time.Sleep(delay) // simulated broker round trip, not a test wait
	}
	for _, m := range msgs {
		p.mu.Lock()
		p.attempts++
		p.mu.Unlock()
		if fail != nil {
			if err := fail(topic, m); err != nil {
				p.signal()
				return err
			}
		}
		id, _ := strconv.ParseInt(m.Metadata.Get("postrelay_record_id"), 10, 64)
		att, _ := strconv.Atoi(m.Metadata.Get("postrelay_attempt"))
		md := make(map[string]string, len(m.Metadata))
		for k, v := range m.Metadata {
			md[k] = v
		}
		d := Delivery{
			Topic: topic, UUID: m.UUID, Key: m.Metadata.Get("postrelay_key"), RecordID: id,
			Attempt: att, Payload: string(m.Payload), Metadata: md, At: time.Now(),
		}
		p.mu.Lock()
		p.deliveries = append(p.deliveries, d)
		p.mu.Unlock()
	}
	p.signal()
	return nil
}

func (p *Publisher) signal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.changed)
	p.changed = make(chan struct{})
}

// Close implements message.Publisher.
func (p *Publisher) Close() error { return nil }

// Deliveries returns a copy of everything accepted so far, in order.
func (p *Publisher) Deliveries() []Delivery {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Delivery(nil), p.deliveries...)
}

// Attempts returns how many messages Publish was asked to accept.
func (p *Publisher) Attempts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts
}

// WaitFor waits until cond holds for the deliveries so far, or the timeout
// passes (then it returns an error describing the last state).
func (p *Publisher) WaitFor(timeout time.Duration, cond func([]Delivery) bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		ch := p.changed
		ds := p.deliveries
		ok := cond(ds)
		n := len(ds)
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("recorder: condition not met within %v (%d deliveries)", timeout, n)
		}
	}
}

// UniqueUUIDs returns the set of message UUIDs delivered.
func UniqueUUIDs(ds []Delivery) map[string]int {
	m := make(map[string]int, len(ds))
	for _, d := range ds {
		m[d.UUID]++
	}
	return m
}

// CheckKeyOrder verifies per-key order of first deliveries: for each key,
// the first delivery of each record appears in increasing record id order.
func CheckKeyOrder(ds []Delivery) error {
	seen := make(map[string]bool, len(ds))
	last := make(map[string]int64)
	for _, d := range ds {
		if seen[d.UUID] {
			continue
		}
		seen[d.UUID] = true
		if prev, ok := last[d.Key]; ok && d.RecordID < prev {
			return fmt.Errorf("key %q: record %d first delivered after record %d", d.Key, d.RecordID, prev)
		}
		last[d.Key] = d.RecordID
	}
	return nil
}

// WaitForAll waits until every message id in want was delivered at least
// once. When the timeout passes first, its error names how many never
// arrived and, through locate (nil: not at all), where each is — see
// Whereabouts.
func (p *Publisher) WaitForAll(timeout time.Duration, want map[string]bool, locate func(ids []string) string) error {
	err := p.WaitFor(timeout, func(ds []Delivery) bool {
		got := UniqueUUIDs(ds)
		for id := range want {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
	if err == nil {
		return nil
	}
	missing := MissingUUIDs(p.Deliveries(), want)
	if len(missing) == 0 {
		return nil // the last one arrived just now
	}
	where := ""
	if locate != nil {
		where = "; " + locate(missing)
	}
	return fmt.Errorf("recorder: %d of %d records never delivered within %v%s", len(missing), len(want), timeout, where)
}
