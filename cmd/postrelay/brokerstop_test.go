package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/engine"
)

// outageEnv sets how long TestBrokerServerStoppedMidRun keeps each broker
// down (a Go duration); .ci/test uses a shorter outage than the default.
const outageEnv = "POSTRELAY_OUTAGE"

const outageDefault = 20 * time.Second

// rssBound is the documented bound on a relay's resident memory during a
// broker outage (the test binary is built with -race, which roughly
// doubles it).
const rssBound = 150 << 20

func outageDuration(t *testing.T) time.Duration {
	v := os.Getenv(outageEnv)
	if v == "" {
		return outageDefault
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "%s=%q", outageEnv, v)
	return d
}

// brokerServer stops and starts one real broker server on this machine.
type brokerServer struct {
	name, addr, url string
	// subscribe subscribes a real subscriber of the broker to topic; close
	// closes it (it is also closed when the test ends).
	subscribe func(t *testing.T, topic string) (msgs <-chan *message.Message, close func())
	// resubscribe: close the subscriber before the outage and subscribe
	// again after it, rather than let it reconnect by itself.
	resubscribe bool
	stop, start func(t *testing.T)
}

func portOpen(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

func runCommand(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
}

// rabbitMQ stops the RabbitMQ application (the Erlang node stays up and
// refuses AMQP connections) and starts it again. The relays publish through
// postrelay's own amqp:// publisher; the test's subscriber is watermill-amqp's,
// whose reconnect has a data race (ThreeDotsLabs/watermill#693) that -race
// would report in this test process, so it is closed for the outage and
// subscribes again after it: the durable queue keeps what is published
// meanwhile.
func rabbitMQ() brokerServer {
	return brokerServer{
		name: "amqp", addr: "127.0.0.1:5672", url: adaptertest.AMQPURL, resubscribe: true,
		subscribe: func(t *testing.T, topic string) (<-chan *message.Message, func()) {
			sub, err := amqp.NewSubscriber(amqp.NewDurableQueueConfig(adaptertest.AMQPURL), watermill.NopLogger{})
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			closeSub := sync.OnceFunc(func() { cancel(); _ = sub.Close() })
			t.Cleanup(closeSub)
			msgs, err := sub.Subscribe(ctx, topic)
			require.NoError(t, err)
			t.Cleanup(func() { deleteQueue(topic) })
			return msgs, closeSub
		},
		stop:  func(t *testing.T) { runCommand(t, "rabbitmqctl", "stop_app") },
		start: func(t *testing.T) { runCommand(t, "rabbitmqctl", "start_app") },
	}
}

// natsServer kills nats-server with SIGTERM and starts it again with the
// same command line; its JetStream store directory keeps the streams.
func natsServer() brokerServer {
	var args []string // the command line of the server stopped
	return brokerServer{
		name: "nats", addr: "127.0.0.1:4222", url: adaptertest.NATSURL,
		subscribe: func(t *testing.T, topic string) (<-chan *message.Message, func()) {
			_, ch := adaptertest.NATS().Subscribe(t, topic)
			return ch, func() {}
		},
		stop: func(t *testing.T) {
			out, err := exec.Command("pgrep", "-x", "nats-server").Output()
			require.NoError(t, err, "no nats-server process found")
			pids := strings.Fields(string(out))
			require.Len(t, pids, 1, "nats-server processes")
			pid, err := strconv.Atoi(pids[0])
			require.NoError(t, err)
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			require.NoError(t, err)
			args = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")[1:]
			require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
		},
		start: func(t *testing.T) {
			if args == nil { // not stopped by this test: the default command line
				args = []string{"-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server"}
			}
			runCommand(t, "start-stop-daemon", append([]string{"--start", "--oknodo", "--background", "--exec", "/usr/sbin/nats-server", "--"}, args...)...)
		},
	}
}

// deleteQueue deletes an AMQP queue, if the server is up.
func deleteQueue(queue string) {
	conn, err := amqp091.Dial(adaptertest.AMQPURL)
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = ch.Close()
	}
}

// collector records what real subscribers receive, acking each message.
type collector struct {
	mu sync.Mutex
	ds []delivery
	at []time.Time
}

// add records msgs until the channel is closed.
func (c *collector) add(msgs <-chan *message.Message) {
	go func() {
		for m := range msgs {
			m.Ack()
			id, _ := strconv.ParseInt(m.Metadata.Get(engine.MetadataRecordID), 10, 64)
			c.mu.Lock()
			c.ds = append(c.ds, delivery{uuid: m.UUID, key: m.Metadata.Get(engine.MetadataKey), recordID: id})
			c.at = append(c.at, time.Now())
			c.mu.Unlock()
		}
	}()
}

func (c *collector) deliveries() []delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]delivery(nil), c.ds...)
}

// firstAfter returns when the first record with an id above id arrived.
func (c *collector) firstAfter(id int64) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, d := range c.ds {
		if d.recordID > id {
			return c.at[i], true
		}
	}
	return time.Time{}, false
}

// vmRSS returns a process's resident set size in bytes.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// sampleRSS samples the relays' VmRSS every 250 ms until stop is called,
// which returns the largest sample of any of them and the sample count.
func sampleRSS(t *testing.T, relays []*relay) (stop func() (peak int64, samples int)) {
	done := make(chan struct{})
	result := make(chan [2]int64)
	sample := func(peak *int64, n *int64) {
		for _, r := range relays {
			rss, err := vmRSS(r.cmd.Process.Pid)
			if err != nil {
				t.Errorf("relay %s: %v", r.id, err)
				continue
			}
			*peak = max(*peak, rss)
			*n++
		}
	}
	go func() {
		var peak, n int64
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		sample(&peak, &n)
		for {
			select {
			case <-tick.C:
				sample(&peak, &n)
			case <-done:
				sample(&peak, &n)
				result <- [2]int64{peak, n}
				return
			}
		}
	}()
	return func() (int64, int) {
		close(done)
		r := <-result
		return r[0], int(r[1])
	}
}

// The broker server itself is stopped for POSTRELAY_OUTAGE (default 20 s)
// while two `postrelay run` relays relay records written continuously, then
// started again. Meanwhile attempts fail and back off (no record is
// dead-lettered) and each relay's resident memory stays under rssBound.
// After the restart a real subscriber gets every committed record at least
// once, no rolled-back one, in order per key of first deliveries.
//
// It stops shared servers, so it runs only in .ci/test's serial step
// (POSTRELAY_SERIAL_FAULTS=1), and always starts the server again.
func TestBrokerServerStoppedMidRun(t *testing.T) {
	if os.Getenv(serialFaultsEnv) == "" {
		t.Skipf("stops the shared RabbitMQ and NATS servers: run by .ci/test's serial step (%s=1)", serialFaultsEnv)
	}
	outage := outageDuration(t)
	for _, srv := range []brokerServer{rabbitMQ(), natsServer()} {
		t.Run(srv.name, func(t *testing.T) {
			adaptertest.Require(t, srv.addr)
			brokerOutage(t, srv, outage)
		})
	}
}

func brokerOutage(t *testing.T, srv brokerServer, outage time.Duration) {
	c := newCluster(t, "--broker", srv.url, "--max-attempts", "100000", "--publish-timeout", "2s")
	sub := &collector{}
	msgs, closeSub := srv.subscribe(t, c.topic)
	sub.add(msgs)
	records := pgx.Identifier{c.cfg.Schema, "records"}.Sanitize()
	w := c.startWriter(20, 5*time.Millisecond)
	live := []*relay{c.start("o0"), c.start("o1")}
	waitFor(t, 30*time.Second, "deliveries flow", func() bool { return len(sub.deliveries()) > 200 })

	stopRSS := sampleRSS(t, live)
	baseline, _ := stopRSS()
	stopRSS = sampleRSS(t, live)
	// Registered last, so it runs first: the server is up again before the
	// relays and the subscriber are stopped, even if the test fails.
	t.Cleanup(func() {
		if !portOpen(srv.addr) {
			srv.start(t)
		}
		waitFor(t, 120*time.Second, srv.name+" answers again", func() bool { return portOpen(srv.addr) })
	})
	if srv.resubscribe {
		closeSub()
	}
	srv.stop(t)
	waitFor(t, 60*time.Second, srv.name+" refuses connections", func() bool { return !portOpen(srv.addr) })
	down := time.Now()
	// Records with an id above this one were written after the server went
	// down, so no relay can have published them before it came back.
	var lastBefore int64
	require.NoError(t, c.pool.QueryRow(context.Background(),
		"SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass), 0)", records).Scan(&lastBefore))

	var failing int
	waitFor(t, outage, "attempts fail during the outage", func() bool {
		require.NoError(t, c.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+records+" WHERE attempts > 0").Scan(&failing))
		return failing > 0
	})
	<-time.After(time.Until(down.Add(outage))) // the rest of the outage
	var maxAttempts, pending, failedAttempts int
	require.NoError(t, c.pool.QueryRow(context.Background(), "SELECT coalesce(max(attempts), 0), count(*), count(*) FILTER (WHERE attempts > 0), coalesce(sum(attempts), 0) FROM "+records).
		Scan(&maxAttempts, &pending, &failing, &failedAttempts))
	t.Logf("%s down for %v: %d records pending, %d of them failed at least once (%d failed attempts, at most %d on one record)",
		srv.name, outage, pending, failing, failedAttempts, maxAttempts)

	srv.start(t)
	waitFor(t, 120*time.Second, srv.name+" answers again", func() bool { return portOpen(srv.addr) })
	up := time.Now()
	peak, samples := stopRSS()
	if srv.resubscribe {
		msgs, _ := srv.subscribe(t, c.topic)
		sub.add(msgs)
	}
	waitFor(t, 60*time.Second, "a record written during the outage delivered", func() bool { _, ok := sub.firstAfter(lastBefore); return ok })
	firstAt, _ := sub.firstAfter(lastBefore)
	first := firstAt.Sub(up)
	atUp := len(sub.deliveries())
	waitFor(t, 60*time.Second, "deliveries continue", func() bool { return len(sub.deliveries()) > atUp+200 })
	w.stop()
	_, dups := verifyDeliveries(t, w, 120*time.Second, sub.deliveries, c.whereabouts)
	all := time.Since(up)

	var dead int
	require.NoError(t, c.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{c.cfg.Schema, "dead_letters"}.Sanitize()).Scan(&dead))
	require.Zero(t, dead, "records dead-lettered during the outage")
	for _, r := range live {
		// A data race reported by a -race relay fails here: its exit
		// status is then 66.
		c.stop(r)
		require.NotContains(t, r.log(), "WARNING: DATA RACE")
		require.NotContains(t, r.log(), "panic:")
	}
	t.Logf("%s stopped %v: %d committed records delivered (%d rolled back, none delivered), %d duplicates; first record written during the outage delivered %v after the server answered, all %v after; relay RSS baseline %.1f MiB, peak %.1f MiB over %d samples (bound %d MiB)",
		srv.name, outage, len(w.committed), len(w.rolledBack), dups, first.Round(time.Millisecond), all.Round(time.Millisecond),
		float64(baseline)/(1<<20), float64(peak)/(1<<20), samples, rssBound>>20)
	require.Less(t, peak, int64(rssBound), "relay resident memory during the outage")
	faultSummary{name: "broker_stopped_" + srv.name, records: len(w.committed), rolledBack: len(w.rolledBack),
		faults: "server_stop:1", duplicates: dups,
		recovery: fmt.Sprintf("first=%v,all=%v", first.Round(time.Millisecond), all.Round(time.Millisecond)),
		note: fmt.Sprintf("server stopped %v; 2 relays; %d failed attempts on %d records (at most %d on one), 0 dead-lettered; relay RSS peak %.1f MiB (baseline %.1f, bound %d, -race build)",
			outage, failedAttempts, failing, maxAttempts, float64(peak)/(1<<20), float64(baseline)/(1<<20), rssBound>>20)}.log(t)
}
