package main

import (
	"context"
	"flag"
	"io"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/adapters/console"
	"github.com/postrelay/postrelay/engine"
)

// relayFlags are the engine settings `run` exposes.
type relayFlags struct {
	broker             adapters.Config // --broker and the per-broker flags (adapters' RegisterFlags)
	configFile         string
	instanceID         string
	batchSize          int
	pollInterval       time.Duration
	heartbeat          time.Duration
	leaseTTL           time.Duration
	maxAttempts        int
	retryInitial       time.Duration
	retryMax           time.Duration
	maxInFlight        int
	publishConcurrency int
	publishTimeout     time.Duration
	migrate            bool
	partitions         int
	publishDelay       time.Duration
}

func (r *relayFlags) register(fs *flag.FlagSet) {
	r.broker.RegisterFlags(fs)
	fs.StringVar(&r.configFile, "config", "", "broker config file (YAML or JSON) with per-broker options (env POSTRELAY_CONFIG)")
	fs.StringVar(&r.instanceID, "instance-id", "", "unique instance id (default hostname-pid-random)")
	fs.IntVar(&r.batchSize, "batch-size", engine.BatchSizeDefault, "records fetched and completed at once per partition")
	fs.DurationVar(&r.pollInterval, "poll-interval", engine.PollIntervalDefault, "fallback poll interval when no notification arrives")
	fs.DurationVar(&r.heartbeat, "heartbeat-interval", engine.HeartbeatIntervalDefault, "heartbeat, lease renewal and rebalance interval")
	fs.DurationVar(&r.leaseTTL, "lease-ttl", engine.LeaseTTLDefault, "partition lease TTL: a crashed instance's partitions move after this")
	fs.IntVar(&r.maxAttempts, "max-attempts", engine.MaxAttemptsDefault, "delivery attempts before a record is dead-lettered")
	fs.DurationVar(&r.retryInitial, "retry-initial", engine.RetryInitialDefault, "backoff after the first failed attempt (doubles per failure)")
	fs.DurationVar(&r.retryMax, "retry-max", engine.RetryMaxDefault, "largest retry backoff")
	fs.IntVar(&r.maxInFlight, "max-in-flight", 0, "Publish calls in flight at once in this instance, across partitions (0: no bound)")
	fs.IntVar(&r.publishConcurrency, "publish-concurrency", engine.PublishConcurrencyDefault, "keys of one partition published at once (1: strictly in id order)")
	fs.DurationVar(&r.publishTimeout, "publish-timeout", engine.PublishTimeoutDefault, "deadline of each publish (message context)")
	fs.BoolVar(&r.migrate, "migrate", false, "migrate the schema before running")
	fs.IntVar(&r.partitions, "partitions", engine.PartitionsDefault, "partition count when --migrate creates the schema")
	fs.DurationVar(&r.publishDelay, "publish-delay", 0, "add this delay to every Publish call: a simulated broker round trip, for benchmarks and fault tests")
}

func (r *relayFlags) engineConfig(c *common) engine.Config {
	return engine.Config{
		Schema:             c.schema,
		Partitions:         r.partitions,
		InstanceID:         r.instanceID,
		BatchSize:          r.batchSize,
		PollInterval:       r.pollInterval,
		HeartbeatInterval:  r.heartbeat,
		LeaseTTL:           r.leaseTTL,
		MaxAttempts:        r.maxAttempts,
		RetryInitial:       r.retryInitial,
		RetryMax:           r.retryMax,
		MaxInFlight:        r.maxInFlight,
		PublishConcurrency: r.publishConcurrency,
		PublishTimeout:     r.publishTimeout,
	}
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	var c common
	var r relayFlags
	var o observability
	var cf consoleFlags
	c.register(fs)
	r.register(fs)
	o.register(fs)
	cf.register(fs, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	cfg := r.engineConfig(&c)
	cfg.Logger = log
	if err := cfg.WithDefaults().Validate(); err != nil {
		return usageError{err}
	}
	bcfg := r.broker
	if r.configFile != "" {
		fileCfg, err := adapters.LoadConfigFile(r.configFile)
		if err != nil {
			return usageError{err}
		}
		if bcfg, err = brokerFlagsOver(fileCfg, fs); err != nil {
			return usageError{err}
		}
	}
	bcfg.Logger = log
	var ccfg console.Config
	if cf.addr != "" {
		if ccfg, err = cf.consoleConfig(c.schema, cfg.WithDefaults().LeaseTTL, log, stderr); err != nil {
			return err
		}
	}

	pool, err := c.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if r.migrate {
		if err := engine.Migrate(ctx, pool, cfg); err != nil {
			return err
		}
	}
	pub, err := adapters.NewPublisher(ctx, bcfg)
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	if r.publishDelay > 0 {
		pub = delayedPublisher{Publisher: pub, delay: r.publishDelay}
	}

	shutdownObs, err := o.setup(ctx, &cfg, pool, log)
	if err != nil {
		return err
	}
	defer shutdownObs()

	eng, err := engine.New(pool, pub, cfg)
	if err != nil {
		return err
	}
	log.Info("postrelay: relay running", "instance_id", eng.InstanceID(), "schema", c.schema,
		"broker", adapters.Redact(bcfg.WithDefaults().URL))
	if cf.addr != "" {
		stopConsole, err := startConsole(ctx, pool, ccfg, cf.addr, log)
		if err != nil {
			return err
		}
		defer stopConsole()
	}
	if err := eng.Run(ctx); err != nil {
		return err
	}
	log.Info("postrelay: relay stopped", "instance_id", eng.InstanceID())
	return nil
}

// brokerFlagsOver returns the broker config of a file with the broker flags
// given on the command line (or by POSTRELAY_ environment variables) set
// over it: the flags win, the file fills the rest.
func brokerFlagsOver(file adapters.Config, fs *flag.FlagSet) (adapters.Config, error) {
	over := flag.NewFlagSet("broker", flag.ContinueOnError)
	file.RegisterFlags(over)
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err == nil && over.Lookup(f.Name) != nil {
			err = over.Set(f.Name, f.Value.String())
		}
	})
	return file, err
}

// observability holds the metrics and tracing flags; setup wires them.
type observability struct {
	metricsAddr  string
	otlpEndpoint string
	tracing      bool
}

func (o *observability) register(fs *flag.FlagSet) {
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address, e.g. :9090 (env POSTRELAY_METRICS_ADDR)")
	fs.BoolVar(&o.tracing, "tracing", false, "create a span per delivery attempt even without --otlp-endpoint (spans are dropped; for measuring their cost)")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "export traces over OTLP/gRPC to this endpoint, e.g. 127.0.0.1:4317 (env POSTRELAY_OTLP_ENDPOINT)")
}

// delayedPublisher adds a fixed delay to every Publish call.
type delayedPublisher struct {
	message.Publisher
	delay time.Duration
}

func (d delayedPublisher) Publish(topic string, msgs ...*message.Message) error {
	time.Sleep(d.delay) // simulated broker round trip
	return d.Publisher.Publish(topic, msgs...)
}
