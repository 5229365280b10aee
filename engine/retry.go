package engine

import (
	"math/rand/v2"
	"time"
)

// RetryDelay is the backoff after failed attempt number attempt (1 for the
// first): RetryInitial doubled per further failure, capped at RetryMax, then
// spread by ±RetryJitter. r is a uniform random number in [0, 1).
func (c Config) RetryDelay(attempt int, r float64) time.Duration {
	c = c.WithDefaults()
	d := c.RetryInitial
	for i := 1; i < attempt && d < c.RetryMax; i++ {
		d *= 2
	}
	d = min(d, c.RetryMax)
	if c.RetryJitter > 0 {
		d = time.Duration(float64(d) * (1 + c.RetryJitter*(2*r-1)))
	}
	return max(d, 0)
}

func (c Config) retryDelay(attempt int) time.Duration {
	return c.RetryDelay(attempt, rand.Float64())
}
