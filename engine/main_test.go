package engine_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestMain(m *testing.M) {
	if err := pgtest.Preflight(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, pgtest.LeakOptions...)
}
