package adapters_test

import (
	"testing"

	"github.com/postrelay/postrelay/adapters/adaptertest"
)

// Every broker: messages published through adapters.NewPublisher arrive at
// a real subscriber of that broker with UUID, payload and metadata intact,
// in order per key.
func TestPublisherConformance(t *testing.T) {
	t.Parallel()
	for _, b := range adaptertest.Brokers() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			adaptertest.Conformance(t, b)
		})
	}
}
