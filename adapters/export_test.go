package adapters

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
)

// NewAMQPPublisherNamed is the amqp:// publisher NewPublisher builds, with
// its connection named name in RabbitMQ (client property connection_name),
// so a test can find and close it server-side.
func NewAMQPPublisherNamed(ctx context.Context, cfg Config, name string) (message.Publisher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Logger = redactingLogger(cfg.Logger)
	p, err := newAMQPPublisher(ctx, cfg, name)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// AMQPChannels is the number of channels an amqp:// publisher pools.
const AMQPChannels = amqpChannels
