package adaptertest

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

// Conformance sizes: Conformance publishes ConformanceMessages messages
// over ConformanceKeys keys, and waits at most ConformanceTimeout for them.
const (
	ConformanceMessages = 60
	ConformanceKeys     = 6
	ConformanceTimeout  = 30 * time.Second
)

// Conformance is the conformance suite for one broker: PublisherConformance
// and RelayConformance as the parallel subtests "publish" and "relay".
func Conformance(t *testing.T, b Broker) {
	t.Helper()
	t.Run("publish", func(t *testing.T) {
		t.Parallel()
		PublisherConformance(t, b)
	})
	t.Run("relay", func(t *testing.T) {
		t.Parallel()
		RelayConformance(t, b)
	})
}

// PublisherConformance publishes ConformanceMessages keyed messages to a fresh topic
// of b through the adapters publisher (the first half one per Publish call,
// the rest in batches of five) and checks that b's own subscriber receives
// every one with its UUID, payload (binary, with zero bytes) and metadata
// intact, in publish order per key (metadata engine.MetadataKey).
// Duplicates are allowed (at least once); a message that was never
// published fails the test. Where the subscriber reports the Kafka
// partition, every key must stay on one partition.
func PublisherConformance(t *testing.T, b Broker) {
	t.Helper()
	topic := Topic("conf_" + b.Name)
	pub, msgs := b.Open(t, topic)

	sent := make([]*message.Message, ConformanceMessages)
	byUUID := make(map[string]int, len(sent))
	for i := range sent {
		key := "key-" + strconv.Itoa(i%ConformanceKeys)
		m := message.NewMessage(watermill.NewUUID(), []byte{0, byte(i), 0xff, 'p', 0, byte(i >> 8)})
		m.Metadata.Set(engine.MetadataKey, key)
		m.Metadata.Set("seq", strconv.Itoa(i/ConformanceKeys))
		m.Metadata.Set("tenant", "acme")
		m.Metadata.Set("note", "ünïcode ✓ with spaces, = and &")
		sent[i] = m
		byUUID[m.UUID] = i
	}

	// Publish concurrently with consuming: some brokers (memory://) block
	// Publish until the subscriber acks.
	published := make(chan error, 1)
	go func() {
		half := len(sent) / 2
		for _, m := range sent[:half] {
			if err := pub.Publish(topic, m); err != nil {
				published <- fmt.Errorf("publish %s: %w", m.UUID, err)
				return
			}
		}
		for i := half; i < len(sent); i += 5 {
			if err := pub.Publish(topic, sent[i:min(i+5, len(sent))]...); err != nil {
				published <- fmt.Errorf("publish batch at %d: %w", i, err)
				return
			}
		}
		published <- nil
	}()

	got := make(map[string]bool, len(sent))
	lastSeq := map[string]int{}
	partitionOf := map[string]int32{}
	partitions := map[int32]bool{}
	deadline := time.After(ConformanceTimeout)
	for len(got) < len(sent) {
		var m *message.Message
		select {
		case m = <-msgs:
		case err := <-published:
			if err != nil {
				t.Fatalf("%s: %v", b.Name, adapters.RedactError(err))
			}
			published = nil // done; keep receiving
			continue
		case <-deadline:
			t.Fatalf("%s: %d of %d messages arrived within %s", b.Name, len(got), len(sent), ConformanceTimeout)
		}
		m.Ack()
		i, ok := byUUID[m.UUID]
		if !ok {
			t.Fatalf("%s: received message %q that was never published", b.Name, m.UUID)
		}
		if got[m.UUID] {
			continue // a duplicate: allowed, at least once
		}
		got[m.UUID] = true
		want := sent[i]
		if !bytes.Equal(want.Payload, m.Payload) {
			t.Fatalf("%s: message %s payload %x, want %x", b.Name, m.UUID, []byte(m.Payload), []byte(want.Payload))
		}
		for k, v := range want.Metadata {
			if m.Metadata.Get(k) != v {
				t.Fatalf("%s: message %s metadata %q = %q, want %q (all: %v)", b.Name, m.UUID, k, m.Metadata.Get(k), v, m.Metadata)
			}
		}
		key := want.Metadata.Get(engine.MetadataKey)
		seq, _ := strconv.Atoi(want.Metadata.Get("seq"))
		if last, seen := lastSeq[key]; seen && seq <= last {
			t.Fatalf("%s: key %s: message seq %d arrived after seq %d", b.Name, key, seq, last)
		} else if !seen && seq != 0 {
			t.Fatalf("%s: key %s: first message to arrive has seq %d, want 0", b.Name, key, seq)
		}
		lastSeq[key] = seq
		if p, ok := kafka.MessagePartitionFromCtx(m.Context()); ok {
			if q, seen := partitionOf[key]; seen && q != p {
				t.Fatalf("%s: key %s on partitions %d and %d", b.Name, key, q, p)
			}
			partitionOf[key] = p
			partitions[p] = true
		}
	}
	if published != nil {
		select {
		case err := <-published:
			if err != nil {
				t.Fatalf("%s: %v", b.Name, adapters.RedactError(err))
			}
		case <-time.After(ConformanceTimeout):
			t.Fatalf("%s: Publish did not return", b.Name)
		}
	}
	if len(partitionOf) > 0 && len(partitions) < 2 {
		t.Fatalf("%s: %d keys all landed on one partition; want them spread", b.Name, ConformanceKeys)
	}
}
