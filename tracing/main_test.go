package tracing_test

import (
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, slices.Concat(pgtest.LeakOptions, []goleak.Option{
		// pgtest.LeakOptions matches this goroutine by its top function,
		// but it is often asleep (time.Sleep on top) for 500ms after a
		// pool closes.
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).triggerHealthCheck.func1"),
	})...)
}
