package console_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/postrelay/postrelay/internal/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, pgtest.LeakOptions...)
}
