package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
)

// replayRateDefault is --rate's default, records per second.
const replayRateDefault = 100

func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replay", stderr)
	var c common
	c.register(fs)
	topic := fs.String("topic", "", "only this topic (default all)")
	key := fs.String("key", "", "only this key (default all)")
	since := fs.String("since", "", "only records created at or after this: RFC 3339 time, or a duration ago such as 2h (default no bound)")
	until := fs.String("until", "", "only records created before this: RFC 3339 time, or a duration ago (default no bound)")
	to := fs.String("to", "", "publish to this broker or webhook URL (options from --config, if given)")
	configFile := fs.String("config", "", "broker config file (YAML or JSON), routes included; used as it is without --to")
	rate := fs.Float64("rate", replayRateDefault, "records per second at most (0: no bound)")
	afterID := fs.Int64("after-id", 0, "resume: only records with a larger id (the last id a stopped replay printed)")
	publishTimeout := fs.Duration("publish-timeout", engine.PublishTimeoutDefault, "deadline of each publish")
	if err := parse(fs, args); err != nil {
		return err
	}
	now := time.Now()
	var f engine.ReplayFilter
	var err error
	f.Topic, f.Key, f.AfterID = *topic, *key, *afterID
	if f.Since, err = parseWhen("since", *since, now); err != nil {
		return usageError{err}
	}
	if f.Until, err = parseWhen("until", *until, now); err != nil {
		return usageError{err}
	}
	if *rate < 0 {
		return usageError{fmt.Errorf("--rate %v: must not be negative", *rate)}
	}
	var bcfg adapters.Config
	switch {
	case *configFile != "":
		if bcfg, err = adapters.LoadConfigFile(*configFile); err != nil {
			return usageError{err}
		}
		if *to != "" {
			bcfg.URL, bcfg.Routes = *to, nil
		}
	case *to != "":
		bcfg.URL = *to
	default:
		return usageError{errors.New("replay: say where to publish with --to URL or --config FILE")}
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	bcfg.Logger = log
	if err := bcfg.WithDefaults().Validate(); err != nil {
		return usageError{err}
	}
	cfg := engine.Config{Schema: c.schema, PublishTimeout: *publishTimeout, Logger: log}
	pool, err := c.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	pub, err := adapters.NewPublisher(ctx, bcfg)
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()

	var lastShown time.Time
	prog, err := engine.Replay(ctx, pool, cfg, pub, f, engine.ReplayOptions{
		Rate: *rate,
		Progress: func(p engine.ReplayProgress) {
			if time.Since(lastShown) >= time.Second || p.Published == p.Total {
				lastShown = time.Now()
				fmt.Fprintf(stderr, "postrelay: replay: %d/%d records published (last id %d)\n", p.Published, p.Total, p.LastID)
			}
		},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replayed %d of %d records to %s (last id %d)\n", prog.Published, prog.Total, replayTarget(bcfg), prog.LastID)
	return nil
}

func replayTarget(c adapters.Config) string {
	if len(c.Routes) > 0 {
		return fmt.Sprintf("%d routes", len(c.Routes))
	}
	return adapters.Redact(c.URL)
}

// parseWhen reads an RFC 3339 time or a duration before now; "" is zero.
func parseWhen(name, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--%s %q: a duration ago must not be negative", name, s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want an RFC 3339 time (2026-12-01T10:00:00Z) or a duration ago (2h)", name, s)
	}
	return t, nil
}
