package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/adapters/console"
	"github.com/postrelay/postrelay/engine"
)

// consoleFlags are the operator console's flags, shared by `console` and
// `run --http`.
type consoleFlags struct {
	addr         string
	token        string
	readOnly     bool
	hidePayloads bool
}

func (f *consoleFlags) register(fs *flag.FlagSet, defaultAddr string) {
	fs.StringVar(&f.addr, "http", defaultAddr, "serve the operator console on this address (env POSTRELAY_HTTP)")
	fs.StringVar(&f.token, "http-token", "", "bearer token the console's changes need; on a loopback address a random one is made and printed when unset (env POSTRELAY_HTTP_TOKEN)")
	fs.BoolVar(&f.readOnly, "read-only", false, "console without changes: no retry, dead-letter, requeue or purge (env POSTRELAY_READ_ONLY)")
	fs.BoolVar(&f.hidePayloads, "hide-payloads", false, "console never shows payloads or metadata values (env POSTRELAY_HIDE_PAYLOADS)")
}

// isLoopback says whether a listen address binds the loopback interface
// only.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// consoleConfig checks the flags: changes on an address other than loopback
// need a token; on loopback a missing one is made up and printed.
func (f *consoleFlags) consoleConfig(schema string, leaseTTL time.Duration, log *slog.Logger, stderr io.Writer) (console.Config, error) {
	loop, err := isLoopback(f.addr)
	if err != nil {
		return console.Config{}, usageError{fmt.Errorf("--http %q: want host:port, e.g. 127.0.0.1:8080: %v", f.addr, err)}
	}
	cfg := console.Config{Schema: schema, Token: f.token, ReadOnly: f.readOnly, HidePayloads: f.hidePayloads,
		LeaseTTL: leaseTTL, Logger: log}
	if !f.readOnly && f.token == "" {
		if !loop {
			return cfg, usageError{fmt.Errorf("--http %s is not a loopback address: the console's changes need a token there; "+
				"set --http-token (or POSTRELAY_HTTP_TOKEN), or pass --read-only", f.addr)}
		}
		var b [16]byte
		_, _ = rand.Read(b[:])
		cfg.Token = hex.EncodeToString(b[:])
		fmt.Fprintf(stderr, "postrelay: console token for changes (this run only; set --http-token to choose one): %s\n", cfg.Token)
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		return cfg, usageError{fmt.Errorf("--http-token / --schema: %w", err)}
	}
	return cfg, nil
}

// startConsole listens on f.addr and serves the console until ctx ends or
// the returned stop is called (which waits for the server and the sampler).
func startConsole(ctx context.Context, pool *pgxpool.Pool, cfg console.Config, addr string, log *slog.Logger) (stop func(), err error) {
	con, err := console.New(pool, cfg)
	if err != nil {
		return nil, usageError{err}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("console: listen on %s: %w", addr, err)
	}
	var h http.Handler = con
	if loop, _ := isLoopback(addr); loop {
		h = loopbackHostOnly(con)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = con.Run(cctx) })
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("postrelay: console server failed", "error", err)
		}
	})
	wg.Go(func() {
		<-cctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	})
	log.Info("postrelay: console listening", "url", "http://"+ln.Addr().String()+"/", "schema", cfg.Schema,
		"read_only", cfg.ReadOnly, "hide_payloads", cfg.HidePayloads)
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}, nil
}

// loopbackHostOnly refuses requests whose Host header names anything but a
// loopback address: a console bound to loopback is then out of reach of a
// web page that points its own host name at 127.0.0.1 (DNS rebinding).
func loopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		ip := net.ParseIP(strings.Trim(host, "[]"))
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "console: this console serves loopback only; the Host header must be localhost or a loopback address",
				http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func cmdConsole(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("console", stderr)
	var c common
	var f consoleFlags
	c.register(fs)
	f.register(fs, "127.0.0.1:8080")
	leaseTTL := fs.Duration("lease-ttl", engine.LeaseTTLDefault, "the relays' lease TTL: instances whose heartbeat is older are shown as not live")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	if f.addr == "" {
		return usageError{errors.New("--http: give the address to serve the console on, e.g. 127.0.0.1:8080")}
	}
	cfg, err := f.consoleConfig(c.schema, *leaseTTL, log, stderr)
	if err != nil {
		return err
	}
	pool, err := c.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	stop, err := startConsole(ctx, pool, cfg, f.addr, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	log.Info("postrelay: console stopped")
	return nil
}
