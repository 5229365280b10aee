package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/engine"
)

//go:embed assets
var assets embed.FS

// Console is the operator console: an http.Handler serving the pages and
// the JSON API under api/v1/. Mount it at the root or under a prefix with
// http.StripPrefix; the pages use relative URLs.
type Console struct {
	pool    *pgxpool.Pool
	cfg     Config
	store   *store
	admin   *engine.Admin
	channel string
	log     *slog.Logger
	sampler *sampler
	mux     *http.ServeMux

	mu         sync.Mutex
	partitions int // the schema's partition count, read once

	// The last backlog read (pending, held, oldest per partition), shared
	// by every request for backlogTTL.
	partsMu   sync.Mutex
	partsAt   time.Time
	partsRows []partitionRow
}

// backlogTTL is how long one read of the partitions' backlog answers every
// status and partitions request (the pages refresh every 5 s): reading it
// walks the head of every partition, the statement of the console that
// costs the most on a busy outbox, so any number of viewers cost at most one
// read per backlogTTL. The leases are read on every request.
const backlogTTL = 5 * time.Second

func (c *Console) forgetPartitions() {
	c.partsMu.Lock()
	c.partsRows = nil
	c.partsMu.Unlock()
}

// readPartitions returns the partitions: the leases as they are now, the
// backlog as read at most backlogTTL ago (the oldest record's age moved on
// by the time since); concurrent requests wait for one read.
func (c *Console) readPartitions(ctx context.Context, n int) ([]partitionRow, error) {
	c.partsMu.Lock()
	defer c.partsMu.Unlock()
	if c.partsRows == nil || len(c.partsRows) != n || time.Since(c.partsAt) >= backlogTTL {
		rows, err := c.store.partitions(ctx, PartitionsParams{Cap: pendingCap(n)})
		if err != nil {
			return nil, err
		}
		c.partsRows, c.partsAt = rows, time.Now()
		return slices.Clone(rows), nil
	}
	leases, err := c.store.leases(ctx)
	if err != nil {
		return nil, err
	}
	age := time.Since(c.partsAt).Seconds()
	out := slices.Clone(c.partsRows)
	for i := range out {
		if i < len(leases) && leases[i].Partition == out[i].Partition {
			out[i].Owner, out[i].Epoch, out[i].LeaseLeft = leases[i].Owner, leases[i].Epoch, leases[i].LeaseLeft
		}
		if out[i].OldestAge > 0 {
			out[i].OldestAge += age
		}
	}
	return out, nil
}

// New returns a console for the outbox in cfg.Schema. It validates cfg; the
// database is first contacted by a request (or Run).
func New(pool *pgxpool.Pool, cfg Config) (*Console, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pool is nil", ErrInvalidConfig)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ecfg := engine.Config{Schema: cfg.Schema, LeaseTTL: cfg.LeaseTTL}
	c := &Console{
		pool:    pool,
		cfg:     cfg,
		store:   newStore(pool, cfg.Schema),
		admin:   engine.NewAdmin(pool, engine.Config{Schema: cfg.Schema}),
		channel: ecfg.NotifyChannel(),
		log:     cfg.Logger,
	}
	c.sampler = newSampler(cfg.SampleInterval, c.store.counters)
	c.routes()
	return c, nil
}

// Run samples the counters behind the rate history every SampleInterval
// until ctx ends, so the overview's chart covers the time nobody watched.
// Without Run, samples are taken when status is asked for. It returns nil
// when ctx ends.
func (c *Console) Run(ctx context.Context) error {
	c.sampler.run(ctx, func(err error) {
		c.log.Warn("console: sampling the table counters failed", "error", err)
	})
	return nil
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, static, "index.html")
	})
	m.Handle("GET /assets/", http.StripPrefix("/assets/", files))

	m.HandleFunc("GET /api/v1/status", c.get(c.handleStatus, nil))
	m.HandleFunc("GET /api/v1/history", c.get(c.handleHistory, nil))
	m.HandleFunc("GET /api/v1/partitions", c.get(c.handlePartitions, nil))
	m.HandleFunc("GET /api/v1/stuck-keys", c.get(c.handleStuckKeys, []string{"topic", "key", "limit"}))
	m.HandleFunc("GET /api/v1/dead-letters", c.get(c.handleDeadLetters, []string{"topic", "key", "error", "limit", "cursor"}))
	m.HandleFunc("GET /api/v1/dead-letters/{id}", c.get(c.handleDeadLetter, nil))
	m.HandleFunc("GET /api/v1/records", c.get(c.handleRecords, []string{"id", "message_id", "key", "limit", "after"}))

	m.HandleFunc("POST /api/v1/stuck-keys/retry", c.mutate(c.handleRetry))
	m.HandleFunc("POST /api/v1/stuck-keys/dead-letter", c.mutate(c.handleDeadLetterNow))
	m.HandleFunc("POST /api/v1/dead-letters/requeue", c.mutate(func(w http.ResponseWriter, r *http.Request) error {
		return c.handleDeadMove(w, r, true)
	}))
	m.HandleFunc("POST /api/v1/dead-letters/purge", c.mutate(func(w http.ResponseWriter, r *http.Request) error {
		return c.handleDeadMove(w, r, false)
	}))
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such API endpoint: " + r.Method + " " + r.URL.Path})
	})
	c.mux = m
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
	// Field names the query parameter or body field at fault (400 only).
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

// get wraps a read-only handler: it refuses unknown query parameters
// (naming them), bounds the request's queries by QueryTimeout and turns its
// error into an answer.
func (c *Console) get(h func(http.ResponseWriter, *http.Request) error, allowed []string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for name := range r.URL.Query() {
			known := false
			for _, a := range allowed {
				known = known || a == name
			}
			if !known {
				c.fail(w, r, badField(name, "unknown query parameter"))
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.QueryTimeout)
		defer cancel()
		if err := h(w, r.WithContext(ctx)); err != nil {
			c.fail(w, r, err)
		}
	}
}

// mutate wraps a mutating handler: read-only consoles refuse it (403), a
// missing token is answered 401 and a wrong one 403; the body is bounded by
// MaxBodyBytes and must be JSON.
func (c *Console) mutate(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c.cfg.ReadOnly {
			writeJSON(w, http.StatusForbidden, apiError{Error: "the console is read-only"})
			return
		}
		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if auth == "" || !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="postrelay console"`)
			writeJSON(w, http.StatusUnauthorized, apiError{Error: "this call changes state: send Authorization: Bearer <token>"})
			return
		}
		if subtle.ConstantTimeCompare([]byte(token), []byte(c.cfg.Token)) != 1 {
			writeJSON(w, http.StatusForbidden, apiError{Error: "wrong token"})
			return
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			c.fail(w, r, badField("Content-Type", fmt.Sprintf("%q: want application/json", ct)))
			return
		}
		if len(r.URL.Query()) > 0 {
			for name := range r.URL.Query() {
				c.fail(w, r, badField(name, "unknown query parameter (the parameters go in the JSON body)"))
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, c.cfg.MaxBodyBytes)
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.QueryTimeout)
		defer cancel()
		defer c.forgetPartitions() // the change shows on the next read
		if err := h(w, r.WithContext(ctx)); err != nil {
			c.fail(w, r, err)
		}
	}
}

// fail answers an error: 400 naming the field for bad input, 413 for a body
// too large, 500 otherwise (with PostgreSQL's message, never a connection
// string; the whole error goes to the log).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	var fe *fieldError
	var mbe *http.MaxBytesError
	var pge *pgconn.PgError
	switch {
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, apiError{Error: fe.field + ": " + fe.msg, Field: fe.field})
	case errors.As(err, &mbe):
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: fmt.Sprintf("request body larger than %d bytes", mbe.Limit)})
	case errors.Is(err, context.DeadlineExceeded):
		c.log.Error("console: request timed out", "path", r.URL.Path, "error", err)
		writeJSON(w, http.StatusGatewayTimeout, apiError{Error: fmt.Sprintf("the database did not answer within %v", c.cfg.QueryTimeout)})
	case errors.As(err, &pge):
		c.log.Error("console: query failed", "path", r.URL.Path, "error", err)
		writeJSON(w, http.StatusInternalServerError, apiError{Error: "database error: " + pge.Message + " (" + pge.Code + ")"})
	default:
		c.log.Error("console: request failed", "path", r.URL.Path, "error", err)
		writeJSON(w, http.StatusInternalServerError, apiError{Error: "internal error (see the console's log)"})
	}
}

// partitionCount returns the schema's partition count, read once.
func (c *Console) partitionCount(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.partitions > 0 {
		return c.partitions, nil
	}
	n, err := c.store.partitionCount(ctx)
	if err != nil {
		return 0, wrapQuery(fmt.Sprintf("read the partition count of schema %q (is it migrated?)", c.cfg.Schema), err)
	}
	c.partitions = n
	return n, nil
}
