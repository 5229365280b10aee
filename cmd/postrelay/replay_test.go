package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
	"github.com/postrelay/postrelay/internal/recorder"
)

// `postrelay replay` re-publishes the selected history (here one key of
// one topic) to a signed webhook from a config file, in id order with the
// original message ids, printing progress; without a target it refuses
// with exit code 2.
func TestReplayCommandRepublishesSelection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, schema := pgtest.FreshSchema(t)
	cfg := engine.Config{Schema: schema, Partitions: 4, HeartbeatInterval: 100 * time.Millisecond, LeaseTTL: time.Second,
		PollInterval: 100 * time.Millisecond, Retention: time.Hour}
	require.NoError(t, engine.Migrate(ctx, pool, cfg))
	eng, err := engine.New(pool, recorder.New(), cfg)
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	t.Cleanup(func() { stop(); require.NoError(t, <-done) })
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	var recs []engine.Record
	for i := range 9 {
		recs = append(recs, engine.Record{Topic: "orders", Key: fmt.Sprint("k", i%3), Payload: fmt.Appendf(nil, "%d", i), MessageID: fmt.Sprint("m", i)})
	}
	require.NoError(t, engine.NewWriter(cfg).Write(ctx, tx, recs...))
	require.NoError(t, tx.Commit(ctx))
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, pool.QueryRow(ctx, "SELECT coalesce(sum(n), 0) FROM "+pgx.Identifier{schema, "history"}.Sanitize()).Scan(&n))
		return n == 9
	}, 20*time.Second, 10*time.Millisecond)

	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := adapters.VerifyWebhook("s3", r.Header.Get(adapters.WebhookSignatureHeader), body, time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		mu.Lock()
		got = append(got, r.Header.Get(adapters.WebhookMessageIDHeader))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "replay.yaml")
	require.NoError(t, os.WriteFile(file, []byte("url: "+srv.URL+"\nwebhook: {secret: s3}\n"), 0o600))

	cmd := exec.Command(binary, "replay", "--database-url", pgtest.URL(), "--schema", schema, "--config", file,
		"--topic", "orders", "--key", "k1", "--since", "1h", "--rate", "1000")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	require.Contains(t, stdout.String(), "replayed 3 of 3 records to "+srv.URL)
	require.Contains(t, stderr.String(), "3/3 records published")
	mu.Lock()
	require.Equal(t, []string{"m1", "m4", "m7"}, got)
	mu.Unlock()

	bad := exec.Command(binary, "replay", "--database-url", pgtest.URL(), "--schema", schema, "--topic", "orders")
	out, err := bad.CombinedOutput()
	require.Error(t, err)
	require.Equal(t, 2, bad.ProcessState.ExitCode(), string(out))
	require.Contains(t, string(out), "--to URL or --config FILE")
	out, err = exec.Command(binary, "replay", "--schema", schema, "--to", "memory://", "--since", "yesterday").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), `--since "yesterday"`)
}
