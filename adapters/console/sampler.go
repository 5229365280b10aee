package console

import (
	"context"
	"sync"
	"time"
)

// sample is one reading of PostgreSQL's counters for the outbox tables.
type sample struct {
	at time.Time
	c  counters
}

// Point is one interval of the rate history.
type Point struct {
	// At is the end of the interval, Seconds its length.
	At      time.Time `json:"t"`
	Seconds float64   `json:"dt_s"`
	// Backlog is PostgreSQL's estimate of the records table's live rows
	// (n_live_tup) at the end of the interval.
	Backlog int64 `json:"backlog"`
	// DeliveredPerS is the records deleted from records per second minus
	// those inserted into dead_letters: records the relays delivered.
	DeliveredPerS float64 `json:"delivered_per_s"`
	// FailuresPerS is the records updated per second: each failed attempt
	// that is retried updates its record once.
	FailuresPerS float64 `json:"failures_per_s"`
	// DeadLetteredPerS is the rows inserted into dead_letters per second.
	DeadLetteredPerS float64 `json:"dead_lettered_per_s"`
}

// sampler keeps the last hour of counter samples in a ring.
type sampler struct {
	interval time.Duration
	read     func(context.Context) (counters, error)

	mu      sync.Mutex
	ring    []sample
	next    int
	n       int
	reading bool
}

func newSampler(interval time.Duration, read func(context.Context) (counters, error)) *sampler {
	size := int(HistoryWindow/interval) + 1
	return &sampler{interval: interval, read: read, ring: make([]sample, size)}
}

// sampleIfDue takes a sample when the last one is at least an interval old
// (less 10 %, so a ticker's jitter does not skip one).
func (s *sampler) sampleIfDue(ctx context.Context) error {
	s.mu.Lock()
	if s.reading || (s.n > 0 && time.Since(s.last().at) < s.interval*9/10) {
		s.mu.Unlock()
		return nil
	}
	s.reading = true
	s.mu.Unlock()
	c, err := s.read(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reading = false
	if err != nil {
		return err
	}
	s.ring[s.next] = sample{at: time.Now(), c: c}
	s.next = (s.next + 1) % len(s.ring)
	s.n = min(s.n+1, len(s.ring))
	return nil
}

func (s *sampler) last() sample { return s.ring[(s.next-1+len(s.ring))%len(s.ring)] }

// samples returns the samples oldest first.
func (s *sampler) samples() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]sample, 0, s.n)
	for i := range s.n {
		out = append(out, s.ring[(s.next-s.n+i+len(s.ring))%len(s.ring)])
	}
	return out
}

// rate computes the rates between two samples; a counter that went down
// (statistics reset) gives no point.
func rate(a, b sample) (Point, bool) {
	dt := b.at.Sub(a.at).Seconds()
	del := b.c.recordsDeleted - a.c.recordsDeleted
	upd := b.c.recordsUpdated - a.c.recordsUpdated
	dead := b.c.deadInserted - a.c.deadInserted
	if dt <= 0 || del < 0 || upd < 0 || dead < 0 {
		return Point{}, false
	}
	return Point{
		At:               b.at,
		Seconds:          dt,
		Backlog:          b.c.recordsLive,
		DeliveredPerS:    float64(max(del-dead, 0)) / dt,
		FailuresPerS:     float64(upd) / dt,
		DeadLetteredPerS: float64(dead) / dt,
	}, true
}

// history returns a point per sampling interval, oldest first.
func (s *sampler) history() []Point {
	ss := s.samples()
	out := make([]Point, 0, len(ss))
	for i := 1; i < len(ss); i++ {
		if p, ok := rate(ss[i-1], ss[i]); ok {
			out = append(out, p)
		}
	}
	return out
}

// current returns the rates over the last minute (or what the history
// holds of it), and false with fewer than two samples.
func (s *sampler) current() (Point, float64, bool) {
	ss := s.samples()
	if len(ss) < 2 {
		return Point{}, 0, false
	}
	b := ss[len(ss)-1]
	a := ss[0]
	for i := len(ss) - 2; i >= 0; i-- {
		a = ss[i]
		if b.at.Sub(a.at) >= time.Minute {
			break
		}
	}
	p, ok := rate(a, b)
	return p, b.at.Sub(a.at).Seconds(), ok
}

// run samples every interval until ctx ends.
func (s *sampler) run(ctx context.Context, onErr func(error)) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if err := s.sampleIfDue(ctx); err != nil && ctx.Err() == nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
