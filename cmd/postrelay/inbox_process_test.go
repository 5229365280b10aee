package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/postrelay/postrelay/adapters"
	"github.com/postrelay/postrelay/adapters/adaptertest"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/pgtest"
)

// dieAfterCommitEnv is examples/inbox's crash hook (DieAfterCommitEnv there).
const dieAfterCommitEnv = "POSTRELAY_INBOX_EXAMPLE_DIE_AFTER_COMMIT"

var (
	consumerBinOnce sync.Once
	consumerBin     string
	consumerBinErr  error
)

// inboxConsumerBinary builds examples/inbox (the consumer process) once.
func inboxConsumerBinary(t *testing.T) string {
	t.Helper()
	consumerBinOnce.Do(func() {
		consumerBin = filepath.Join(filepath.Dir(binary), "inbox-consumer")
		out, err := exec.Command("go", "build", "-race", "-o", consumerBin, "../../examples/inbox").CombinedOutput()
		if err != nil {
			consumerBinErr = fmt.Errorf("build examples/inbox: %v: %s", err, out)
		}
	})
	require.NoError(t, consumerBinErr)
	return consumerBin
}

// seqWriter commits records in transactions of three (every fifth rolled
// back), each with payload {"key", "seq"}: per key, the committed records'
// seq are 1, 2, 3, … with no gap (a rolled-back record's seq is reused).
type seqWriter struct {
	mu         sync.Mutex
	committed  map[string]bool
	rolledBack map[string]bool
	perKey     map[string]int64 // last committed seq
	cancel     context.CancelFunc
	done       chan struct{}
}

func startSeqWriter(c *cluster, keys int, pause time.Duration) *seqWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &seqWriter{committed: map[string]bool{}, rolledBack: map[string]bool{}, perKey: map[string]int64{}, cancel: cancel, done: make(chan struct{})}
	ew := engine.NewWriter(c.cfg)
	go func() {
		defer close(w.done)
		tick := time.NewTicker(pause)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
			commit := i%5 != 4
			ids := make([]string, 3)
			keysOf := make([]string, 3)
			recs := make([]engine.Record, 3)
			w.mu.Lock()
			for j := range recs {
				k := fmt.Sprintf("k%d", (i*3+j)%keys)
				ids[j], keysOf[j] = fmt.Sprintf("e2e-%d-%d", i, j), k
				recs[j] = engine.Record{Topic: c.topic, Key: k, MessageID: ids[j],
					Payload: fmt.Appendf(nil, `{"key":%q,"seq":%d}`, k, w.perKey[k]+1)}
			}
			w.mu.Unlock()
			// Not ctx: a stop never interrupts a COMMIT (its outcome would be unknown).
			bg := context.Background()
			tx, err := c.pool.Begin(bg)
			if err != nil {
				continue
			}
			if err := ew.Write(bg, tx, recs...); err != nil {
				_ = tx.Rollback(context.Background())
				continue
			}
			if commit {
				err = tx.Commit(bg)
			} else {
				err = tx.Rollback(bg)
			}
			if err != nil {
				// An ambiguous COMMIT would leave a gap in a key's seq.
				c.t.Errorf("writer: transaction %d: %v", i, err)
				return
			}
			w.mu.Lock()
			for j, id := range ids {
				if commit {
					w.committed[id] = true
					w.perKey[keysOf[j]]++
				} else {
					w.rolledBack[id] = true
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *seqWriter) stop() { w.cancel(); <-w.done }

// inboxBroker is the broker of one end-to-end run: its URL for the relays
// and the consumers, after the topic exists.
type inboxBroker struct {
	name string
	// pause between the writer's transactions: the NATS consumers take one
	// message at a time (in stream order), the Kafka ones one per partition.
	pause time.Duration
	// setup returns the broker URL and extra `postrelay run` flags.
	setup func(t *testing.T, topic string) (string, []string)
	// published, if set, counts the messages the broker holds for the
	// topic.
	published func(t *testing.T, url, topic string) int
}

func inboxBrokers() []inboxBroker {
	return []inboxBroker{
		{"nats", 25 * time.Millisecond, func(t *testing.T, topic string) (string, []string) {
			adaptertest.Require(t, "127.0.0.1:4222")
			nc, err := nats.Connect(adaptertest.NATSURL)
			require.NoError(t, err)
			t.Cleanup(nc.Close)
			js, err := nc.JetStream()
			require.NoError(t, err)
			// The stream the relays' publisher would create; the consumers
			// subscribe before the first publish.
			_, err = js.AddStream(&nats.StreamConfig{Name: adapters.NATSStreamName(topic), Subjects: []string{topic}})
			require.NoError(t, err)
			t.Cleanup(func() { _ = js.DeleteStream(adapters.NATSStreamName(topic)) })
			// JetStream's deduplication by message id off: the relays'
			// republished records reach the consumers as broker duplicates.
			conf := filepath.Join(t.TempDir(), "broker.yaml")
			require.NoError(t, os.WriteFile(conf, []byte("nats:\n  disable_msg_id: true\n"), 0o600))
			return adaptertest.NATSURL, []string{"--config", conf}
		}, func(t *testing.T, _, topic string) int {
			nc, err := nats.Connect(adaptertest.NATSURL)
			require.NoError(t, err)
			defer nc.Close()
			js, err := nc.JetStream()
			require.NoError(t, err)
			info, err := js.StreamInfo(adapters.NATSStreamName(topic))
			require.NoError(t, err)
			return int(info.State.Msgs)
		}},
		{"kafka", 10 * time.Millisecond, func(t *testing.T, topic string) (string, []string) {
			kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(adaptertest.KafkaPartitions, topic),
				kfake.GroupMinSessionTimeout(time.Second))
			require.NoError(t, err)
			t.Cleanup(kc.Close)
			return "kafka://" + kc.ListenAddrs()[0], nil
		}, nil}, // kfake: the consumers' count of suppressed duplicates only
	}
}

var dupLine = regexp.MustCompile(`msg="inbox: duplicate suppressed".* message_uuid=(\S+)`)

// End to end, as processes: a writer commits records (every fifth
// transaction rolled back) → 3 `postrelay run` relays, one SIGKILLed
// mid-run → NATS JetStream / Kafka (kfake) → 2 consumer processes
// (examples/inbox) applying each message through the inbox, one of which
// SIGKILLs itself between a commit and its ack. The business table holds
// exactly one row per committed record and none for a rolled-back one,
// each key's rows are in order (seq 1, 2, 3, … by application order), the
// outbox holds one follow-up per committed record, and the message whose
// ack was lost was redelivered and suppressed.
func TestInboxEndToEndProcesses(t *testing.T) {
	t.Parallel()
	consumer := inboxConsumerBinary(t)
	for _, br := range inboxBrokers() {
		t.Run(br.name, func(t *testing.T) {
			start := time.Now()
			topic := adaptertest.Topic("inbox_e2e_" + br.name)
			url, relayArgs := br.setup(t, topic)
			// A slow Publish keeps records in flight, so the SIGKILLed relay
			// leaves published but uncompleted records that the others publish
			// again (broker duplicates).
			c := newCluster(t, append([]string{"--broker", url, "--publish-delay", "20ms", "--batch-size", "20"}, relayArgs...)...)
			c.topic = topic
			inboxSchema, outboxSchema := pgtest.NewSchemaName(), pgtest.NewSchemaName()
			pgtest.DropSchemaOnCleanup(t, c.pool, inboxSchema)
			pgtest.DropSchemaOnCleanup(t, c.pool, outboxSchema)

			startConsumer := func(id string, env ...string) *relay {
				p := &relay{id: id, exited: make(chan struct{})}
				p.cmd = exec.Command(consumer, "--database-url", pgtest.URL(), "--broker", url, "--topic", topic,
					"--consumer", "e2e_"+br.name, "--instance", id, "--inbox-schema", inboxSchema,
					"--outbox-schema", outboxSchema, "--log-level", "debug")
				p.cmd.Env = append(os.Environ(), env...)
				p.cmd.Stderr = p
				require.NoError(t, p.cmd.Start())
				go func() { p.err = p.cmd.Wait(); close(p.exited) }()
				t.Cleanup(func() {
					_ = p.cmd.Process.Kill()
					<-p.exited
					if t.Failed() {
						t.Logf("consumer %s log (tail):\n%s", p.id, tail(p.log(), 200))
					}
				})
				return p
			}
			c1 := startConsumer("c1", dieAfterCommitEnv+"=100")
			c2 := startConsumer("c2")
			for _, p := range []*relay{c1, c2} {
				waitFor(t, 30*time.Second, "consumer "+p.id+" subscribed", func() bool {
					return strings.Contains(p.log(), "inbox example: consuming")
				})
			}
			effects := pgx.Identifier{inboxSchema, "orders_applied"}.Sanitize()
			records := pgx.Identifier{c.cfg.Schema, "records"}.Sanitize()
			count := func(q string) int {
				var n int
				require.NoError(t, c.pool.QueryRow(context.Background(), q).Scan(&n))
				return n
			}
			// A backlog first, so the relays have batches in flight when r1
			// is killed: the records it published but did not complete are
			// published again by the others (broker duplicates).
			w := startSeqWriter(c, 20, br.pause)
			waitFor(t, 30*time.Second, "a backlog of 300 records", func() bool { return count("SELECT count(*) FROM "+records) >= 300 })
			backlog := count("SELECT count(*) FROM " + records)
			r1 := c.start("r1")
			c.start("r2")
			c.start("r3")
			waitFor(t, 30*time.Second, "the relays drain the backlog", func() bool { return count("SELECT count(*) FROM "+records) < backlog-60 })
			require.NoError(t, r1.cmd.Process.Signal(syscall.SIGKILL))
			<-r1.exited
			waitFor(t, 30*time.Second, "effects flow", func() bool { return count("SELECT count(*) FROM "+effects) > 150 })
			select {
			case <-c1.exited:
			case <-time.After(30 * time.Second):
				t.Fatal("consumer c1 did not kill itself after its 100th commit")
			}
			require.ErrorContains(t, c1.err, "signal: killed")
			m := regexp.MustCompile(`SIGKILL after commit, before ack" message_uuid=(\S+)`).FindStringSubmatch(c1.log())
			require.NotNil(t, m, "c1 log:\n%s", tail(c1.log(), 20))
			lostAck := m[1]
			waitFor(t, 30*time.Second, "more effects after both kills", func() bool {
				return count("SELECT count(*) FROM "+effects) > count("SELECT count(*) FROM "+effects+" WHERE instance = 'c1'")+100
			})
			w.stop()

			waitFor(t, 40*time.Second, "every committed record applied", func() bool {
				return count("SELECT count(DISTINCT message_id) FROM "+effects) >= len(w.committed) &&
					count("SELECT count(*) FROM "+records) == 0
			})
			waitFor(t, 30*time.Second, "the message whose ack was lost is redelivered and suppressed", func() bool {
				for _, m := range dupLine.FindAllStringSubmatch(c2.log(), -1) {
					if m[1] == lostAck {
						return true
					}
				}
				return false
			})
			require.NoError(t, c2.cmd.Process.Signal(syscall.SIGTERM))
			select {
			case <-c2.exited:
				require.NoError(t, c2.err, "c2 log:\n%s", tail(c2.log(), 40))
			case <-time.After(30 * time.Second):
				t.Fatal("consumer c2 did not stop on SIGTERM")
			}
			for _, r := range c.relays[1:] {
				c.stop(r)
			}

			// Exactly one effect per committed record, none for a rolled-back one.
			rows, err := c.pool.Query(context.Background(), "SELECT message_id, key, seq FROM "+effects+" ORDER BY n")
			require.NoError(t, err)
			var id, key string
			var seq int64
			perMsg := map[string]int{}
			lastSeq := map[string]int64{}
			_, err = pgx.ForEachRow(rows, []any{&id, &key, &seq}, func() error {
				perMsg[id]++
				require.False(t, w.rolledBack[id], "rolled-back record %s applied", id)
				require.Equal(t, lastSeq[key]+1, seq, "key %s: effect of seq %d after %d", key, seq, lastSeq[key])
				lastSeq[key] = seq
				return nil
			})
			require.NoError(t, err)
			for id := range w.committed {
				require.Equal(t, 1, perMsg[id], "committed record %s applied %d times", id, perMsg[id])
			}
			require.Len(t, perMsg, len(w.committed))
			for k, n := range w.perKey {
				require.Equal(t, n, lastSeq[k], "key %s", k)
			}
			// One follow-up record per committed record in the outbox.
			require.Equal(t, len(w.committed), count("SELECT count(*) FROM "+pgx.Identifier{outboxSchema, "records"}.Sanitize()))
			require.Equal(t, len(w.committed), count("SELECT count(DISTINCT message_id) FROM "+pgx.Identifier{outboxSchema, "records"}.Sanitize()))

			suppressed := len(dupLine.FindAllString(c1.log(), -1)) + len(dupLine.FindAllString(c2.log(), -1))
			// Messages on the broker beyond one per committed record: the
			// relays' republications after the SIGKILL.
			brokerDups := "not counted (kfake)"
			if br.published != nil {
				n := br.published(t, url, topic) - len(w.committed)
				require.GreaterOrEqual(t, n, 0)
				brokerDups = strconv.Itoa(n)
			}
			byC1 := count("SELECT count(*) FROM " + effects + " WHERE instance = 'c1'")
			took := time.Since(start)
			t.Logf("inbox e2e %s: %d committed records applied once (%d by c1 before its SIGKILL), %d rolled back never applied; "+
				"duplicate messages on the broker (relay republications): %s; %d deliveries of applied messages suppressed; took %v",
				br.name, len(w.committed), byC1, len(w.rolledBack), brokerDups, suppressed, took.Round(100*time.Millisecond))
			faultSummary{name: "inbox_e2e_" + br.name, records: len(w.committed), rolledBack: len(w.rolledBack),
				faults: "relay_sigkill:1,consumer_sigkill_after_commit:1", lost: len(w.committed) - len(perMsg), duplicates: suppressed,
				recovery: "-", note: fmt.Sprintf("3 relays, 2 inbox consumers; duplicates = deliveries of already-applied messages, all suppressed; "+
					"duplicate messages on the broker from the relays: %s; effects: %d rows for %d records", brokerDups, len(perMsg), len(w.committed))}.log(t)
		})
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
