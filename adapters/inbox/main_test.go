package inbox_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, append(pgtest.LeakOptions,
		// Broker libraries' background goroutines that outlive Close by
		// design (the same list as package adapters' tests).
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp.(*ConnectionWrapper).handleConnectionClose"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream.(*Subscriber).read"),
	)...)
}
