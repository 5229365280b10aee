package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters"
)

// `run` takes its broker flags from adapters' RegisterFlags: every
// per-broker option is a flag, a config file fills what the flags do not
// set, and flags given win over the file.
func TestRunBrokerFlagsComeFromAdapters(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "broker.yaml")
	require.NoError(t, os.WriteFile(file, []byte("url: amqp://guest:guest@127.0.0.1:5672/\namqp:\n  mode: topic\n  exchange: from-file\n"), 0o600))

	parseRun := func(args ...string) (*relayFlags, adapters.Config) {
		t.Helper()
		fs := newFlagSet("run", io.Discard)
		var c common
		var r relayFlags
		c.register(fs)
		r.register(fs)
		require.NoError(t, fs.Parse(args))
		bcfg := r.broker
		if r.configFile != "" {
			fileCfg, err := adapters.LoadConfigFile(r.configFile)
			require.NoError(t, err)
			bcfg, err = brokerFlagsOver(fileCfg, fs)
			require.NoError(t, err)
		}
		return &r, bcfg
	}

	_, b := parseRun("--broker", "nats://127.0.0.1:4222", "--nats-disable-msg-id")
	require.Equal(t, "nats://127.0.0.1:4222", b.URL)
	require.True(t, b.NATS.DisableMsgID, "a per-broker flag of adapters")

	_, b = parseRun("--config", file)
	require.Equal(t, "amqp://guest:guest@127.0.0.1:5672/", b.URL, "the file's URL")
	require.Equal(t, "topic", b.AMQP.Mode)
	require.Equal(t, "from-file", b.AMQP.Exchange)

	_, b = parseRun("--config", file, "--amqp-exchange", "from-flag", "--broker", "amqp://other:5672/")
	require.Equal(t, "amqp://other:5672/", b.URL, "--broker wins over the file")
	require.Equal(t, "from-flag", b.AMQP.Exchange, "a flag wins over the file")
	require.Equal(t, "topic", b.AMQP.Mode, "the file fills what no flag set")
}
