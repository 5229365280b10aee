package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// Many `postrelay migrate` processes at once on a fresh schema all succeed
// (an advisory lock serializes them); the CLI rejects bad input with exit
// code 2 and a message naming it.
func TestConcurrentMigrateProcessesAndBadInput(t *testing.T) {
	t.Parallel()
	_, schema := pgtest.FreshSchema(t)
	var wg sync.WaitGroup
	outs := make([]string, 6)
	errs := make([]error, 6)
	for i := range outs {
		wg.Go(func() {
			out, err := exec.Command(binary, "migrate", "--database-url", pgtest.URL(), "--schema", schema, "--partitions", "32").CombinedOutput()
			outs[i], errs[i] = string(out), err
		})
	}
	wg.Wait()
	for i := range outs {
		require.NoError(t, errs[i], outs[i])
		require.Contains(t, outs[i], fmt.Sprintf("migrated to version %d", engine.SchemaVersion()))
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "--schema", "Bad-Name"}, `Schema = "Bad-Name"`},
		{[]string{"migrate", "--partitions", "5000"}, "Partitions = 5000"},
		{[]string{"run", "--schema", schema, "--database-url", pgtest.URL(), "--broker", "mqtt://127.0.0.1:1883"}, `unknown broker scheme "mqtt"`},
		{[]string{"status", "--database-url", "postgres://u:hunter2@127.0.0.1:1/test?connect_timeout=2"}, "unreachable"},
		{[]string{"dead", "requeue", "--database-url", pgtest.URL()}, "name the dead letters with --id, or pass --all"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	} {
		cmd := exec.Command(binary, tc.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		require.Error(t, err, strings.Join(tc.args, " "))
		require.Contains(t, stderr.String(), tc.want, strings.Join(tc.args, " "))
		require.NotContains(t, stderr.String(), "hunter2")
	}

	// status on the migrated schema prints the table and JSON.
	out, err := exec.Command(binary, "status", "--database-url", pgtest.URL(), "--schema", schema).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "32 partitions")
	out, err = exec.Command(binary, "status", "--database-url", pgtest.URL(), "--schema", schema, "--json").Output()
	require.NoError(t, err)
	require.Contains(t, string(out), `"partitions": 32`)
}
