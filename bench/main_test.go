package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/postrelay/postrelay/internal/pgtest"
)

// Every system a run starts (relay processes, the in-process relay, River's
// client, the forwarder) is stopped before the run returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, pgtest.LeakOptions...) }
