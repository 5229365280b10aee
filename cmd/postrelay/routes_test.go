package main

import (
	"bytes"
	"context"
	"fmt"
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
)

// `postrelay run --config` takes routes from the file: orders.* goes to a
// webhook (secret from the environment), a topic with no route and no
// default ends as a dead letter naming it; a file with a bad route is
// refused at start (exit code 2) naming the entry.
func TestRouteRunConfigFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, schema := pgtest.FreshSchema(t)
	cfg := engine.Config{Schema: schema, Partitions: 4}
	require.NoError(t, engine.Migrate(ctx, pool, cfg))

	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get(adapters.WebhookMessageIDHeader))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	file := filepath.Join(dir, "routes.yaml")
	require.NoError(t, os.WriteFile(file, []byte(fmt.Sprintf(`routes:
  - pattern: "orders.*"
    url: %s
    webhook: {secret_env: ROUTE_TEST_SECRET}
`, srv.URL)), 0o600))

	cmd := exec.Command(binary, "run", "--database-url", pgtest.URL(), "--schema", schema, "--config", file,
		"--max-attempts", "2", "--retry-initial", "50ms", "--retry-max", "100ms", "--poll-interval", "100ms", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "ROUTE_TEST_SECRET=s3")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-waited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	})

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, engine.NewWriter(cfg).Write(ctx, tx,
		engine.Record{Topic: "orders.created", Key: "a", Payload: []byte("1"), MessageID: "o1"},
		engine.Record{Topic: "billing.charged", Key: "b", Payload: []byte("2"), MessageID: "b1"},
		engine.Record{Topic: "orders.paid", Key: "a", Payload: []byte("3"), MessageID: "o2"}))
	require.NoError(t, tx.Commit(ctx))

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2
	}, 30*time.Second, 20*time.Millisecond, "stderr: %s", &stderr)
	mu.Lock()
	require.Equal(t, []string{"o1", "o2"}, got)
	mu.Unlock()
	var lastErr string
	require.Eventually(t, func() bool {
		err := pool.QueryRow(ctx, "SELECT last_error FROM "+pgx.Identifier{schema, "dead_letters"}.Sanitize()+" WHERE message_id = 'b1'").Scan(&lastErr)
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	require.Contains(t, lastErr, `no route for topic "billing.charged"`)

	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("routes:\n  - {pattern: \"orders.*\", url: \"memory://\"}\n  - {pattern: \"orders.*\", url: \"nats://127.0.0.1:4222\"}\n"), 0o600))
	refuse := exec.Command(binary, "run", "--database-url", pgtest.URL(), "--schema", schema, "--config", bad)
	out, err := refuse.CombinedOutput()
	require.Error(t, err)
	require.Equal(t, 2, refuse.ProcessState.ExitCode(), string(out))
	require.Contains(t, string(out), `Routes[1] (pattern "orders.*"): duplicates Routes[0] (pattern "orders.*")`)
}
