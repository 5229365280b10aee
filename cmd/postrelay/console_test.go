package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// consoleProc is a postrelay process serving the console.
type consoleProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
	lines  chan string
	done   chan error
}

// startConsoleProc runs the binary with args and env, failing the test if
// it does not log the console's URL within 30s; it returns the URL.
func startConsoleProc(t *testing.T, env []string, args ...string) (*consoleProc, string) {
	t.Helper()
	p := &consoleProc{cmd: exec.Command(binary, args...), lines: make(chan string, 100), done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	pipe, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		p.done <- p.cmd.Wait()
		close(p.lines)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Error("postrelay did not stop within 30s of SIGTERM")
		}
	})
	urlRe := regexp.MustCompile(`console listening" url=(http://\S+/)`)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("postrelay exited before serving the console:\n%s", p.output())
			}
			if m := urlRe.FindStringSubmatch(line); m != nil {
				return p, m[1]
			}
		case <-deadline:
			t.Fatalf("postrelay did not log the console URL within 30s:\n%s", p.output())
		}
	}
}

func (p *consoleProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// stop sends SIGTERM and waits for a clean exit.
func (p *consoleProc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		require.NoError(t, err, p.output())
		p.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatalf("postrelay did not stop within 30s of SIGTERM:\n%s", p.output())
	}
}

func httpDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func migrated(t *testing.T) string {
	t.Helper()
	pool, schema := pgtest.FreshSchema(t)
	require.NoError(t, engine.Migrate(context.Background(), pool, engine.Config{Schema: schema, Partitions: 8}))
	return schema
}

// `postrelay console` serves the API without a relay; changes need the
// token from POSTRELAY_HTTP_TOKEN (401 without, 403 with another); SIGTERM
// stops it cleanly; the database password never shows.
func TestConsoleCommand(t *testing.T) {
	t.Parallel()
	schema := migrated(t)
	token := "cli-token-0123456789abcdef"
	p, url := startConsoleProc(t, []string{"POSTRELAY_HTTP_TOKEN=" + token},
		"console", "--database-url", pgtest.URL(), "--schema", schema, "--http", "127.0.0.1:0")
	code, body := httpDo(t, http.MethodGet, url+"api/v1/status", "", "")
	require.Equal(t, http.StatusOK, code, body)
	var st struct {
		Schema     string `json:"schema"`
		Partitions int    `json:"partitions"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.Equal(t, schema, st.Schema)
	require.Equal(t, 8, st.Partitions)
	code, _ = httpDo(t, http.MethodGet, url, "", "")
	require.Equal(t, http.StatusOK, code)
	// A request naming another host (a DNS-rebinding page) is refused.
	req, err := http.NewRequest(http.MethodGet, url+"api/v1/status", nil)
	require.NoError(t, err)
	req.Host = "attacker.example:8080"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMisdirectedRequest, resp.StatusCode)

	code, body = httpDo(t, http.MethodPost, url+"api/v1/dead-letters/purge", "", `{"ids":[1]}`)
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, body = httpDo(t, http.MethodPost, url+"api/v1/dead-letters/purge", "not-the-token-0123456789", `{"ids":[1]}`)
	require.Equal(t, http.StatusForbidden, code, body)
	code, body = httpDo(t, http.MethodPost, url+"api/v1/dead-letters/purge", token, `{"ids":[1]}`)
	require.Equal(t, http.StatusOK, code, body)
	require.JSONEq(t, `{"purged":0}`, body)
	p.stop(t)
	require.NotContains(t, p.output(), token, "the token given is never logged")
}

// On a loopback address without a token the console makes one up and
// prints it; that token works. With --read-only there is none and changes
// are refused.
func TestConsoleCommandLoopbackTokenAndReadOnly(t *testing.T) {
	t.Parallel()
	schema := migrated(t)
	p, url := startConsoleProc(t, nil, "console", "--database-url", pgtest.URL(), "--schema", schema, "--http", "127.0.0.1:0")
	m := regexp.MustCompile(`console token for changes .*: ([0-9a-f]{32})`).FindStringSubmatch(p.output())
	require.NotNil(t, m, p.output())
	code, body := httpDo(t, http.MethodPost, url+"api/v1/dead-letters/requeue", m[1], `{"ids":[7]}`)
	require.Equal(t, http.StatusOK, code, body)
	p.stop(t)

	p, url = startConsoleProc(t, nil, "console", "--database-url", pgtest.URL(), "--schema", schema, "--http", "127.0.0.1:0", "--read-only", "--hide-payloads")
	require.NotContains(t, p.output(), "console token")
	code, body = httpDo(t, http.MethodPost, url+"api/v1/dead-letters/requeue", m[1], `{"ids":[7]}`)
	require.Equal(t, http.StatusForbidden, code, body)
	code, body = httpDo(t, http.MethodGet, url+"api/v1/status", "", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"read_only":true`)
	require.Contains(t, body, `"hide_payloads":true`)
}

// The console refuses to start with changes enabled on an address other
// than loopback without a token, and names the way out; a bad address is
// named too.
func TestConsoleCommandRefusesOpenAddressWithoutToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"console", "--http", "0.0.0.0:0"}, "--http 0.0.0.0:0 is not a loopback address: the console's changes need a token there; set --http-token (or POSTRELAY_HTTP_TOKEN), or pass --read-only"},
		{[]string{"console", "--http", ":8080"}, "not a loopback address"},
		{[]string{"run", "--http", "10.1.2.3:8080"}, "not a loopback address"},
		{[]string{"console", "--http", "localhost"}, `--http "localhost": want host:port`},
		{[]string{"console", "--http", "127.0.0.1:0", "--http-token", "short"}, "Token"},
	} {
		cmd := exec.Command(binary, append(tc.args, "--database-url", "postgres://u:hunter2@127.0.0.1:1/test")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, strings.Join(tc.args, " "))
		require.Equal(t, 2, ee.ExitCode(), stderr.String())
		require.Contains(t, stderr.String(), tc.want)
		require.NotContains(t, stderr.String(), "hunter2")
	}
}

// `postrelay run --http` serves the same console beside the relay: it
// shows this relay live, owning every partition.
func TestConsoleOnRun(t *testing.T) {
	t.Parallel()
	_, schema := pgtest.FreshSchema(t)
	p, url := startConsoleProc(t, []string{"POSTRELAY_HTTP_TOKEN=run-token-0123456789abcdef"}, "run", "--database-url", pgtest.URL(),
		"--schema", schema, "--migrate", "--partitions", "4", "--broker", "memory://", "--instance-id", "relay-under-test",
		"--heartbeat-interval", "100ms", "--lease-ttl", "1s", "--http", "127.0.0.1:0")
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := httpDo(t, http.MethodGet, url+"api/v1/status", "", "")
		require.Equal(t, http.StatusOK, code, body)
		if strings.Contains(body, `"id":"relay-under-test"`) && strings.Contains(body, `"live":true,"partitions":4`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the relay live with its 4 partitions: %s", body)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a condition
	}
	p.stop(t)
}
