package adapters_test

import (
	"testing"

	"github.com/postrelay/postrelay/adapters/adaptertest"
)

// The conformance suite against every broker: messages published through
// adapters.NewPublisher, and records written in PostgreSQL transactions and
// relayed by the engine, arrive at a real subscriber of that broker with
// UUID, payload and metadata intact, in order per key; no rolled-back
// record arrives.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, b := range adaptertest.Brokers() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			adaptertest.Conformance(t, b)
		})
	}
}
