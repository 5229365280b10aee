//go:build unix

package tracing_test

import (
	"syscall"
	"testing"
	"time"
)

// cpuPerOp starts measuring the process's CPU time (user and system, the
// garbage collector and background goroutines included); the function it
// returns reports it per iteration as cpu-ns/op. Call it as
// `defer cpuPerOp(b)()` before the b.Loop loop. On a shared machine the
// wall-clock ns/op also counts the time spent waiting for a core; CPU time
// does not.
func cpuPerOp(b *testing.B) func() {
	start := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
