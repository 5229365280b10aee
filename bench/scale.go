package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// ScaleResult is the scale scenario's JSON.
type ScaleResult struct {
	Scenario string `json:"scenario"`
	// Records and Keys are per relay (each N-relay drain preloads N times
	// as many) unless FixedTotal: then every drain preloads them.
	Records        int          `json:"records"`
	Keys           int          `json:"keys"`
	FixedTotal     bool         `json:"fixed_total"`
	Rounds         int          `json:"rounds"`
	Partitions     int          `json:"partitions"`
	PublishDelayMS float64      `json:"publish_delay_ms"`
	Concurrency    int          `json:"instance_concurrency"`
	Points         []ScalePoint `json:"points"`
	Chart          string       `json:"chart"`
}

// ScalePoint is one instance count: medians over the rounds, and each
// round's rate.
type ScalePoint struct {
	Instances     int       `json:"instances"`
	Seconds       float64   `json:"seconds"`
	RecordsPerSec float64   `json:"records_per_sec"`
	Efficiency    float64   `json:"efficiency"`
	RoundRates    []float64 `json:"round_rates,omitempty"`
}

// runScale drains with 1, 2, 4, 8 relay processes, each bounded to
// --instance-concurrency publishes in flight against a broker with a
// --publish-delay round trip: the relays, not PostgreSQL, are the
// bottleneck, so throughput should grow linearly.
//
// Each relay gets the same work whatever their number (weak scaling): N
// relays drain N × --records records over N × --keys keys, so every drain
// lasts about as long as the single relay's. With one fixed workload
// (--fixed-total, how it ran before 2026-12-02) the 8-relay drain lasted
// about 2 s, and its start and end, not the relays' rate, moved its figure
// by ±10 % from run to run. --rounds repeats the series, in reverse order
// every other round; each point is the median.
func runScale(ctx context.Context, o options, out io.Writer) (*ScaleResult, error) {
	o.records = orInt(o.records, 20000)
	o.keys = orInt(o.keys, 10000)
	o.publishDelay = orDur(o.publishDelay, 5*time.Millisecond)
	o.concurrency = orInt(o.concurrency, 8)
	o.rounds = orInt(o.rounds, 1)
	if o.instances == "" {
		o.instances = "1,2,4,8"
	}
	var counts []int
	for _, s := range strings.Split(o.instances, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--instances %q: want a list such as 1,2,4,8", o.instances)
		}
		counts = append(counts, n)
	}
	pool, err := openPool(ctx, o, 8)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	res := &ScaleResult{Scenario: "scale", Records: o.records, Keys: o.keys, FixedTotal: o.fixedTotal, Rounds: o.rounds,
		Partitions: o.partitions, PublishDelayMS: float64(o.publishDelay) / float64(time.Millisecond), Concurrency: o.concurrency, Chart: o.out}
	rates := make([][]float64, len(counts))
	secs := make([][]float64, len(counts))
	for round := range o.rounds {
		for k := range counts {
			i := k
			if round%2 == 1 {
				i = len(counts) - 1 - k
			}
			n := counts[i]
			run := o
			if !o.fixedTotal {
				run.records, run.keys = o.records*n, o.keys*n
			}
			d, err := drainOnce(ctx, pool, run, n, out)
			if err != nil {
				return nil, err
			}
			rates[i] = append(rates[i], d.RecordsPerSec)
			secs[i] = append(secs[i], d.Seconds)
		}
	}
	var base float64
	for i, n := range counts {
		p := ScalePoint{Instances: n, Seconds: median(secs[i]), RecordsPerSec: median(rates[i]), RoundRates: rates[i]}
		if base == 0 {
			base = p.RecordsPerSec / float64(n)
		}
		p.Efficiency = p.RecordsPerSec / (float64(n) * base)
		res.Points = append(res.Points, p)
	}
	fmt.Fprintf(out, "\n%-10s %10s %12s %10s  %s\n", "relays", "seconds", "records/s", "efficiency", "records/s per round")
	for _, p := range res.Points {
		fmt.Fprintf(out, "%-10d %10.2f %12.0f %10.2f  %s\n", p.Instances, p.Seconds, p.RecordsPerSec, p.Efficiency, joinRates(p.RoundRates))
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(scaleSVG(res)), 0o644); err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "chart written to %s\n", o.out)
	}
	return res, nil
}

// scaleSVG draws records/s against relay count, with the ideal line.
func scaleSVG(r *ScaleResult) string {
	const w, h, m = 640, 400, 60
	maxN, maxY := 1, 1.0
	for _, p := range r.Points {
		maxN = max(maxN, p.Instances)
		maxY = max(maxY, p.RecordsPerSec)
	}
	base := 0.0
	if len(r.Points) > 0 {
		base = r.Points[0].RecordsPerSec / float64(r.Points[0].Instances)
	}
	maxY = max(maxY, base*float64(maxN)) * 1.1
	x := func(n float64) float64 { return m + n/float64(maxN)*(w-2*m) }
	y := func(v float64) float64 { return h - m - v/maxY*(h-2*m) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="14">postrelay scale: %d records, %.0f ms publish delay, %d in flight per relay</text>`+"\n", m, r.Records, r.PublishDelayMS, r.Concurrency)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", m, h-m, w-m, h-m, m, m, m, h-m)
	for i := 0; i <= 4; i++ {
		v := maxY * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%.0f</text>`+"\n", m-6, y(v)+4, v)
	}
	for _, p := range r.Points {
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%d</text>`+"\n", x(float64(p.Instances)), h-m+18, p.Instances)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">relay processes</text>`+"\n", w/2, h-m+38)
	fmt.Fprintf(&b, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">records/s</text>`+"\n", h/2, h/2)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999" stroke-dasharray="6 4"/>`+"\n", x(0), y(0), x(float64(maxN)), y(base*float64(maxN)))
	var pts []string
	for _, p := range r.Points {
		pts = append(pts, fmt.Sprintf("%.0f,%.0f", x(float64(p.Instances)), y(p.RecordsPerSec)))
	}
	fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#1f77b4" stroke-width="2"/>`+"\n", strings.Join(pts, " "))
	for _, p := range r.Points {
		fmt.Fprintf(&b, `<circle cx="%.0f" cy="%.0f" r="4" fill="#1f77b4"/><text x="%.0f" y="%.0f">%.0f/s (%.2f)</text>`+"\n",
			x(float64(p.Instances)), y(p.RecordsPerSec), x(float64(p.Instances))+6, y(p.RecordsPerSec)-8, p.RecordsPerSec, p.Efficiency)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#999">dashed: linear from 1 relay</text>`+"\n", w-m-170, m+10)
	b.WriteString("</svg>\n")
	return b.String()
}
