// Package adapters builds Watermill publishers from configuration and
// binds Watermill code to the outbox.
//
// # Brokers by configuration
//
// NewPublisher(ctx, Config) returns a message.Publisher for the broker the
// URL's scheme names, refined by that broker's option struct. A Config
// comes from Go, from a YAML or JSON file (LoadConfigFile), from flags
// (Config.RegisterFlags) or from environment variables (ConfigFromEnv).
// The publisher owns every connection it opens; its Close closes them.
//
//	scheme                   library                        options             what per-key order means there
//	memory://                watermill gochannel            MemoryOptions       Publish blocks until the subscriber acks, so a
//	                                                                            subscriber sees each key in publish order; with
//	                                                                            no subscriber messages are dropped
//	postgres://,             watermill-sql/v4, default      SQLOptions          one table watermill_<topic> per topic (created on
//	postgresql://            PostgreSQL schema, own pgxpool                     first publish); rows are read in insertion order,
//	                                                                            so the whole topic is ordered. The message UUID
//	                                                                            column is VARCHAR(36): record MessageIDs must be
//	                                                                            at most 36 characters (the default UUIDv7 is)
//	amqp://, amqps://        postrelay's own, on amqp091-go AMQPOptions         Mode "queue": a durable queue named <topic>
//	                         (watermill-amqp's wire                             (declared) via the default exchange; Mode "topic":
//	                         format), publisher confirms                        a durable topic exchange (Exchange), routing key
//	                         on, per-message deadline                           <topic>. A queue is FIFO: order holds for one
//	                                                                            consumer per queue (competing consumers or
//	                                                                            requeues reorder)
//	nats://                  watermill-nats/v2, JetStream   NATSOptions         subject = <topic>; stream NATSStreamName(topic)
//	                                                                            (the topic with '.', '*', '>' and ' ' replaced by
//	                                                                            '_') created on first publish; Nats-Msg-Id = the
//	                                                                            message UUID (duplicates dropped in the stream's
//	                                                                            window). A stream is ordered; order holds for one
//	                                                                            consumer with one in-flight message
//	redis://, rediss://      watermill-redisstream          RedisOptions        stream key = <topic>; a stream is ordered; order
//	                         (go-redis URL syntax)                              holds for one consumer per group
//	kafka://h:p[,h:p]        watermill-kafka/v3 (sarama     KafkaOptions        the record key (metadata postrelay_key) is the
//	                         sync producer, acks all)                           Kafka message key, hashed (sarama's FNV-1a hash
//	                                                                            partitioner, not the Java client's murmur2) to a
//	                                                                            partition: one key stays in one partition, in
//	                                                                            order. One request in flight per broker keeps
//	                                                                            order through retries. Keyless messages get a nil
//	                                                                            key and are spread over partitions
//
// In every case postrelay publishes a key's record N+1 only after record N
// was published successfully; the table says what the broker then does
// with that order. The message UUID (the record's message id) is stable
// across redeliveries, so consumers deduplicate by it: package
// adapters/inbox does it in the consumer's transaction (exactly-once
// effects).
//
// URL syntax: each URL is what the library's own client accepts (libpq
// style for PostgreSQL, including query parameters; amqp091; nats.go;
// go-redis), with these exceptions: memory:// takes the query parameter
// print=true (the same as MemoryOptions.Print: log each message's topic,
// UUID, key and payload size at info level), and kafka:// takes a
// comma-separated list of host:port with nothing else (no user info, path
// or query; configure the rest through KafkaOptions).
//
// # amqp://
//
// The amqp:// publisher is postrelay's own, on github.com/rabbitmq/amqp091-go
// (watermill-amqp v3's publisher has a data race in its reconnect,
// ThreeDotsLabs/watermill#693). It writes what watermill-amqp's
// DefaultMarshaler writes, so watermill-amqp subscribers read its messages:
// body = payload, the UUID in header "_watermill_message_uuid", each
// metadata entry as a string header, persistent delivery mode, no other
// property. It declares what watermill-amqp's durable configs declare (a
// durable queue, or a durable topic exchange); an existing queue or
// exchange with other settings (PRECONDITION_FAILED) is used as it is.
//
// One connection, dialed when NewPublisher runs and again by the first
// Publish that finds it closed (after a failed dial, Publish fails with
// that error for 250 ms without dialing). Sixteen channels in confirm mode
// are pooled: a Publish call holds one from its first message to its last
// confirm, so its confirms are its own and up to sixteen calls run in
// parallel. Publish returns nil only once every message was confirmed; a
// nack, a connection or channel lost before the confirm, or the message's
// context ending first (msg.Context(): the engine's per-attempt timeout)
// returns an error wrapping ErrNotConfirmed. Opening a channel and
// declaring are bounded by the context too. While RabbitMQ blocks
// publishing on the connection (a memory or disk alarm), Publish fails at
// once; a write already under way when the block begins waits for its
// end, whatever the context.
//
// # Routes, handlers and webhooks
//
// Config.Routes sends each topic to the sink of the route whose pattern
// matches it (Route documents the pattern syntax and the precedence), with
// Config.URL as the default route: NewPublisher then returns a *Router,
// one publisher per route. A route whose broker cannot be reached fails
// only its own topics' Publish calls (ErrRouteUnavailable), so the engine
// backs off those keys while the other routes' keys flow; a route that
// could not open at start is opened again by a later Publish. A topic no
// route matches, with no default, fails with ErrNoRoute and ends as a dead
// letter naming it. Validate refuses a bad route naming its entry.
//
// HandlerRoute (or NewHandlerPublisher) makes Go functions sinks: to the
// engine they are publishers, so they get its retries, backoff, dead
// letters, spans and metrics. Return engine.Permanent(err) to dead-letter
// a record at once.
//
// http:// and https:// URLs are webhooks: each message is POSTed (body =
// payload; headers: X-Postrelay-Message-Id, X-Postrelay-Topic,
// X-Postrelay-Timestamp, X-Postrelay-Meta-<key> per metadata entry,
// percent-encoded, and Postrelay-Signature: t=<unix>,v1=<hex HMAC-SHA256
// of "<unix>.<body>">, checked by VerifyWebhook). 2xx is delivered; 5xx,
// 408, 429, timeouts and connection errors are retried; other answers are
// permanent (dead-lettered at once) unless WebhookOptions.Retry4xx.
// Redirects are not followed.
//
// # Secrets
//
// Passwords never appear in errors or logs: Redact replaces the user-info
// password and password-like query parameters with "xxxxx"; every error
// NewPublisher, Validate and the loaders return, and every log line the
// broker libraries write through Config.Logger, passes through it. Errors
// keep their chain (errors.Is and errors.As see the library's error), only
// their text is redacted. Invalid configuration wraps ErrInvalidConfig and
// names the field (or variable) and the bad value.
//
// # Watermill integration
//
// TxPublisher is a message.Publisher that writes outbox records into a
// transaction instead of sending, so code that publishes through Watermill
// switches to the outbox by swapping its publisher. TxHandler runs a
// Watermill handler's business writes and its outgoing messages in one
// transaction.
//
// # Testing
//
// Package adaptertest opens each broker against the real local servers
// (Kafka as franz-go's in-process kfake cluster) with a subscriber of the
// same library, and adaptertest.Conformance checks a broker end to end:
// UUID, payload and metadata intact, order per key.
package adapters
