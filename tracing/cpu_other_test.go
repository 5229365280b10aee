//go:build !unix

package tracing_test

import "testing"

// cpuPerOp reports nothing where getrusage is not available.
func cpuPerOp(*testing.B) func() { return func() {} }
