package engine_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/recorder"
)

// A Publish error marked engine.Permanent dead-letters its record on the
// first attempt, with MaxAttempts far from reached; a plain error on the
// same run is retried; the permanent record's key holds no later record
// back once it is dead-lettered.
func TestPermanentErrorDeadLettersAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.MaxAttempts = 100
	refused := errors.New("http 400")
	var transientLeft atomic.Int32
	transientLeft.Store(2)
	b.pub.SetFail(func(topic string, msg *message.Message) error {
		switch string(msg.Payload) {
		case "bad-0":
			return fmt.Errorf("webhook said: %w", engine.Permanent(refused))
		case "flaky-0":
			if transientLeft.Add(-1) >= 0 {
				return errors.New("http 503")
			}
		}
		return nil
	})
	r := start(t, b, cfg, b.pub)
	writeTx(t, b, true, rec("t", "bad", 0), rec("t", "bad", 1), rec("t", "flaky", 0))

	dead := r.waitEvent(t, 10*time.Second, func(e engine.Event) bool { return e.Kind == engine.EventDeadLettered })
	require.Equal(t, "bad", dead.Key)
	require.Equal(t, 1, dead.Attempt, "dead-lettered on its first attempt")
	require.ErrorIs(t, dead.Err, engine.ErrPermanent)
	require.ErrorIs(t, dead.Err, refused)
	require.NoError(t, b.pub.WaitFor(10*time.Second, func(ds []recorder.Delivery) bool {
		n := 0
		for _, d := range ds {
			if d.Payload == "bad-1" || d.Payload == "flaky-0" {
				n++
			}
		}
		return n == 2
	}))
	require.Equal(t, 1, count(t, b, "dead_letters"))
	require.Nil(t, engine.Permanent(nil))
}
