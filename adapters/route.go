package adapters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrNoRoute is returned by a routing publisher's Publish for a topic no
// route matches when there is no default route. The engine retries such a
// record with backoff and dead-letters it after MaxAttempts, with this
// error (naming the topic) as its last error.
var ErrNoRoute = errors.New("adapters: no route for topic")

// ErrRouteUnavailable wraps the error of a route whose publisher could not
// be opened; Publish returns it (and tries to open the publisher again at
// most every RouteReopenInterval) for that route's topics only.
var ErrRouteUnavailable = errors.New("adapters: route unavailable")

// RouteReopenInterval is the shortest time between two attempts to open a
// route's publisher that failed to open.
const RouteReopenInterval = time.Second

// Route sends the topics matching Pattern to one sink: a broker or webhook
// (Config.URL and its options), an in-process handler (Handler) or a
// publisher of your own (Publisher). Exactly one of the three is set.
//
// # Patterns
//
// A topic and a pattern are sequences of segments separated by '.'. A
// pattern segment is a literal (matching itself, case-sensitively), "*"
// (matching exactly one segment, whatever it holds) or, as the last
// segment only, "**" (matching one or more segments). Wildcards are whole
// segments: "ord*" is refused. So "orders.*" matches "orders.created" but
// neither "orders" nor "orders.eu.created"; "audit.**" matches
// "audit.login" and "audit.eu.login" but not "audit"; "**" matches every
// topic and is the default route.
//
// # Precedence
//
// When several patterns match a topic, the most specific wins, compared in
// this order:
//
//  1. a pattern without wildcards (an exact topic) beats any other;
//  2. more literal segments before the first wildcard (the longest literal
//     prefix) wins: "orders.eu.*" beats "orders.*.created";
//  3. a pattern without "**" (a fixed number of segments) beats one with
//     it: "orders.*" beats "orders.**";
//  4. more literal segments in all wins: "*.eu.created" beats "*.eu.*".
//
// Two patterns equal on all four that can match a common topic (including
// two identical patterns) are refused by Validate, naming both entries, so
// every topic has at most one route. Config.URL, when set together with
// Routes, is the default route (the same as a "**" route; setting both is
// refused).
type Route struct {
	// Pattern selects the topics this route takes (see Patterns above).
	// Required; there is no default.
	Pattern string `json:"pattern" yaml:"pattern"`
	// Config is the route's broker or webhook: its URL (any scheme
	// NewPublisher accepts, plus http:// and https:// for webhooks) and
	// that scheme's options. Its Logger defaults to the enclosing Config's.
	// It must not have Routes of its own. Defaults to none (then Handler
	// or Publisher must be set).
	Config Config `json:"-" yaml:"-"`
	// Handler, when set, makes the route an in-process handler sink: each
	// message is passed to it and a nil return means delivered (see
	// HandlerRoute). Defaults to nil.
	Handler HandlerFunc `json:"-" yaml:"-"`
	// Publisher, when set, is the route's sink as it is. The routing
	// publisher does not close it. Defaults to nil.
	Publisher message.Publisher `json:"-" yaml:"-"`
}

// HandlerRoute returns a route passing the messages of the topics matching
// pattern to h.
func HandlerRoute(pattern string, h HandlerFunc) Route { return Route{Pattern: pattern, Handler: h} }

// PublisherRoute returns a route passing the messages of the topics
// matching pattern to pub (which the routing publisher does not close).
func PublisherRoute(pattern string, pub message.Publisher) Route {
	return Route{Pattern: pattern, Publisher: pub}
}

// URLRoute returns a route sending the topics matching pattern to the
// broker or webhook at url, with cfg's options (cfg.URL is replaced).
func URLRoute(pattern, url string, cfg Config) Route {
	cfg.URL = url
	return Route{Pattern: pattern, Config: cfg}
}

// pattern is a parsed route pattern.
type pattern struct {
	raw      string
	segs     []string
	exact    bool // no wildcard
	prefix   int  // literal segments before the first wildcard
	open     bool // ends with "**"
	literals int  // literal segments in all
}

// parsePattern validates and parses a route pattern.
func parsePattern(raw string) (pattern, error) {
	p := pattern{raw: raw, exact: true}
	if raw == "" {
		return p, errors.New("pattern is empty")
	}
	p.segs = strings.Split(raw, ".")
	for i, s := range p.segs {
		switch {
		case s == "":
			return p, fmt.Errorf("pattern %q has an empty segment", raw)
		case s == "**":
			if i != len(p.segs)-1 {
				return p, fmt.Errorf(`pattern %q: "**" may only be the last segment`, raw)
			}
			p.open = true
			p.exact = false
		case s == "*":
			p.exact = false
		case strings.Contains(s, "*"):
			return p, fmt.Errorf("pattern %q: segment %q mixes '*' with other characters (wildcards are whole segments: * or **)", raw, s)
		default:
			p.literals++
			if p.exact {
				p.prefix++
			}
		}
	}
	return p, nil
}

// rank orders patterns by precedence; a higher rank wins.
func (p pattern) rank() [4]int {
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	return [4]int{b(p.exact), p.prefix, b(!p.open), p.literals}
}

// match reports whether p matches topic's segments.
func (p pattern) match(topic []string) bool {
	for i, s := range p.segs {
		if s == "**" {
			return len(topic) > i
		}
		if i >= len(topic) || (s != "*" && s != topic[i]) {
			return false
		}
	}
	return len(topic) == len(p.segs)
}

// overlap reports whether some topic matches both a and b.
func overlap(a, b []string) bool {
	switch {
	case len(a) > 0 && a[0] == "**":
		return len(b) > 0
	case len(b) > 0 && b[0] == "**":
		return len(a) > 0
	case len(a) == 0 || len(b) == 0:
		return len(a) == len(b)
	case a[0] == b[0] || a[0] == "*" || b[0] == "*":
		return overlap(a[1:], b[1:])
	}
	return false
}

// routeName names a route entry in errors: its index and pattern.
func routeName(i int, r Route) string {
	return fmt.Sprintf("Routes[%d] (pattern %s)", i, strconv.Quote(r.Pattern))
}

// validateRoutes checks c.Routes, naming the bad entry.
func (c Config) validateRoutes() error {
	bad := func(i int, r Route, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, routeName(i, r), fmt.Sprintf(format, args...))
	}
	pats := make([]pattern, len(c.Routes))
	for i, r := range c.Routes {
		p, err := parsePattern(r.Pattern)
		if err != nil {
			return bad(i, r, "%v", err)
		}
		pats[i] = p
		sinks := 0
		if r.Config.URL != "" {
			sinks++
		}
		if r.Handler != nil {
			sinks++
		}
		if r.Publisher != nil {
			sinks++
		}
		switch {
		case sinks == 0:
			return bad(i, r, "no sink: set the URL, a Handler or a Publisher")
		case sinks > 1:
			return bad(i, r, "more than one sink: set only one of the URL, Handler and Publisher")
		case len(r.Config.Routes) > 0:
			return bad(i, r, "a route cannot have routes of its own")
		}
		if r.Config.URL != "" {
			if err := r.Config.WithDefaults().Validate(); err != nil {
				return fmt.Errorf("%s: %w", routeName(i, r), err)
			}
		}
		if p.raw == "**" && c.URL != "" {
			return bad(i, r, "a default route and URL %q are both set: keep one", Redact(c.URL))
		}
		for j := range i {
			if pats[j].rank() == p.rank() && overlap(pats[j].segs, p.segs) {
				if pats[j].raw == p.raw {
					return bad(i, r, "duplicates %s", routeName(j, c.Routes[j]))
				}
				return bad(i, r, "overlaps %s with equal precedence (a topic could match both); make one more specific", routeName(j, c.Routes[j]))
			}
		}
	}
	return nil
}

// Router is a message.Publisher sending each topic to the sink of its
// route (see Route). Each route has its own publisher: when one broker is
// down only Publish calls for its topics fail (the engine backs those
// records' keys off and retries them), the other routes' topics keep
// flowing. NewPublisher returns a *Router when Config.Routes is set.
type Router struct {
	routes []*route // by precedence, highest first
	cache  sync.Map // topic → *route (nil entry: no route)
	log    *slog.Logger
	closed chan struct{}
	once   sync.Once
}

// route is one route's sink, opened on first need when opening it at start
// failed.
type route struct {
	pat   pattern
	name  string
	open  func(ctx context.Context) (message.Publisher, error)
	owned bool // Close closes pub

	mu       sync.Mutex
	pub      message.Publisher
	lastErr  error
	lastTry  time.Time
	reopenIn time.Duration
}

// NewRouter opens a routing publisher for cfg.Routes (and cfg.URL as the
// default route, if set). A route whose broker cannot be reached at start
// does not fail NewRouter: its error is logged, Publish returns it
// (wrapped in ErrRouteUnavailable) for that route's topics, and the
// publisher is opened again on a later Publish (at most every
// RouteReopenInterval). Bad configuration fails at once, naming the entry.
func NewRouter(ctx context.Context, cfg Config) (*Router, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Routes) == 0 {
		return nil, fmt.Errorf("%w: Routes is empty", ErrInvalidConfig)
	}
	rt := &Router{log: cfg.Logger, closed: make(chan struct{})}
	entries := cfg.Routes
	if cfg.URL != "" {
		def := cfg
		def.Routes = nil
		entries = append(entries[:len(entries):len(entries)], Route{Pattern: "**", Config: def})
	}
	for i, r := range entries {
		p, _ := parsePattern(r.Pattern)
		ro := &route{pat: p, name: routeName(i, r), reopenIn: RouteReopenInterval}
		switch {
		case r.Handler != nil:
			pub := NewHandlerPublisher(r.Handler)
			ro.pub, ro.owned = pub, true
		case r.Publisher != nil:
			ro.pub = r.Publisher
		default:
			rc := r.Config
			if rc.Logger == nil {
				rc.Logger = cfg.Logger
			}
			ro.owned = true
			ro.open = func(ctx context.Context) (message.Publisher, error) { return NewPublisher(ctx, rc) }
			ro.pub, ro.lastErr = ro.open(ctx)
			ro.lastTry = time.Now()
			if ro.lastErr != nil {
				cfg.Logger.Warn("adapters: route unavailable at start; its topics are retried until it opens",
					"route", ro.name, "url", Redact(rc.URL), "error", RedactError(ro.lastErr))
			}
		}
		rt.routes = append(rt.routes, ro)
	}
	sort.SliceStable(rt.routes, func(i, j int) bool {
		a, b := rt.routes[i].pat.rank(), rt.routes[j].pat.rank()
		for k := range a {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return false
	})
	return rt, nil
}

// Match returns the pattern of the route topic goes to, and false when no
// route matches.
func (rt *Router) Match(topic string) (string, bool) {
	r := rt.lookup(topic)
	if r == nil {
		return "", false
	}
	return r.pat.raw, true
}

func (rt *Router) lookup(topic string) *route {
	if v, ok := rt.cache.Load(topic); ok {
		return v.(*route)
	}
	segs := strings.Split(topic, ".")
	var found *route
	for _, r := range rt.routes {
		if r.pat.match(segs) {
			found = r
			break
		}
	}
	rt.cache.Store(topic, found)
	return found
}

// Publish implements message.Publisher: it publishes msgs with the sink of
// topic's route.
func (rt *Router) Publish(topic string, msgs ...*message.Message) error {
	select {
	case <-rt.closed:
		return ErrPublisherClosed
	default:
	}
	r := rt.lookup(topic)
	if r == nil {
		return fmt.Errorf("%w %q (no pattern matches and there is no default route)", ErrNoRoute, topic)
	}
	pub, err := r.publisher(msgs)
	if err != nil {
		return err
	}
	return pub.Publish(topic, msgs...)
}

// publisher returns the route's publisher, opening it if it is not open
// and the last attempt is long enough ago.
func (r *route) publisher(msgs []*message.Message) (message.Publisher, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pub != nil {
		return r.pub, nil
	}
	if time.Since(r.lastTry) < r.reopenIn {
		return nil, fmt.Errorf("%w: %s: %s", ErrRouteUnavailable, r.name, RedactError(r.lastErr))
	}
	ctx := context.Background()
	if len(msgs) > 0 {
		ctx = msgs[0].Context()
	}
	r.pub, r.lastErr = r.open(ctx)
	r.lastTry = time.Now()
	if r.lastErr != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrRouteUnavailable, r.name, RedactError(r.lastErr))
	}
	return r.pub, nil
}

// Close closes the publishers the router opened (not those passed in
// Route.Publisher). A second Close does nothing.
func (rt *Router) Close() error {
	var errs []error
	rt.once.Do(func() {
		close(rt.closed)
		for _, r := range rt.routes {
			r.mu.Lock()
			if r.pub != nil && r.owned {
				if err := r.pub.Close(); err != nil {
					errs = append(errs, fmt.Errorf("adapters: close %s: %w", r.name, err))
				}
			}
			r.mu.Unlock()
		}
	})
	return errors.Join(errs...)
}
