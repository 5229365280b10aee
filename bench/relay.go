package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postrelay/postrelay/engine"
)

// relayBinary builds cmd/postrelay once per run.
var relayBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "postrelay-bench-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "postrelay")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/postrelay/postrelay/cmd/postrelay")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build cmd/postrelay: %w", err)
	}
	return bin, nil
})

// relayProc is one `postrelay run` process.
type relayProc struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan error
}

// benchSchema creates a fresh migrated schema and returns a cleanup.
func benchSchema(ctx context.Context, pool *pgxpool.Pool, o options) (engine.Config, func(), error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	cfg := engine.Config{Schema: "bench_" + hex.EncodeToString(b[:]), Partitions: o.partitions}
	if err := engine.Migrate(ctx, pool, cfg); err != nil {
		return cfg, nil, err
	}
	if o.deadRecords > 0 {
		// Vacuum lag: records written and deleted (delivered) before the
		// run, whose dead tuples and index entries stay (autovacuum is off
		// on this machine; VACUUM would remove them).
		recs := pgx.Identifier{cfg.Schema, "records"}.Sanitize()
		if _, err := pool.Exec(ctx, "INSERT INTO "+recs+" (partition, key, topic, message_id, payload) "+
			"SELECT i % $1, 'dead-' || (i % 1000), 'bench.dead', gen_random_uuid()::text, '\\x00' FROM generate_series(1, $2) i",
			cfg.Partitions, o.deadRecords); err != nil {
			return cfg, nil, fmt.Errorf("--dead-records: %w", err)
		}
		if _, err := pool.Exec(ctx, "DELETE FROM "+recs); err != nil {
			return cfg, nil, fmt.Errorf("--dead-records: %w", err)
		}
	}
	return cfg, func() {
		if !o.keepSchema {
			_, _ = pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+pgx.Identifier{cfg.Schema}.Sanitize()+" CASCADE")
		}
	}, nil
}

// startRelays starts n relay processes on the schema and waits until the
// partitions are spread over all of them.
func startRelays(ctx context.Context, pool *pgxpool.Pool, o options, cfg engine.Config, n int) ([]*relayProc, error) {
	bin, err := relayBinary()
	if err != nil {
		return nil, err
	}
	var procs []*relayProc
	for i := range n {
		args := []string{"run", "--database-url", o.databaseURL, "--schema", cfg.Schema, "--broker", "memory://",
			"--instance-id", fmt.Sprintf("relay-%d", i), "--log-level", "warn",
			"--heartbeat-interval", "250ms", "--lease-ttl", "5s",
			"--publish-delay", o.publishDelay.String(), "--max-in-flight", strconv.Itoa(o.concurrency)}
		if o.batchSize > 0 {
			args = append(args, "--batch-size", strconv.Itoa(o.batchSize))
		}
		if o.publishLanes > 0 {
			args = append(args, "--publish-concurrency", strconv.Itoa(o.publishLanes))
		}
		if o.tracing == "on" {
			args = append(args, "--tracing")
		}
		if o.retention > 0 {
			args = append(args, "--retention", o.retention.String())
		}
		p := &relayProc{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
		p.cmd.Stderr = &p.stderr
		if err := p.cmd.Start(); err != nil {
			stopRelays(procs)
			return nil, err
		}
		go func() { p.done <- p.cmd.Wait() }()
		procs = append(procs, p)
	}
	// Wait for a balanced assignment: every partition leased, by n owners.
	room := (cfg.Partitions + n - 1) / n
	deadline := time.Now().Add(60 * time.Second)
	for {
		rows, err := pool.Query(ctx, "SELECT owner, count(*) FROM "+pgx.Identifier{cfg.Schema, "partitions"}.Sanitize()+
			" WHERE owner IS NOT NULL AND lease_until > now() GROUP BY owner")
		if err != nil {
			stopRelays(procs)
			return nil, err
		}
		owners, total, maxLoad := 0, 0, 0
		var owner string
		var c int
		_, err = pgx.ForEachRow(rows, []any{&owner, &c}, func() error {
			owners++
			total += c
			maxLoad = max(maxLoad, c)
			return nil
		})
		if err != nil {
			stopRelays(procs)
			return nil, err
		}
		if owners == n && total == cfg.Partitions && maxLoad <= room {
			return procs, nil
		}
		for _, p := range procs {
			select {
			case err := <-p.done:
				stopRelays(procs)
				return nil, fmt.Errorf("relay exited early: %v\n%s", err, p.stderr.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			stopRelays(procs)
			return nil, fmt.Errorf("relays did not settle: %d owners, %d partitions leased", owners, total)
		}
		select {
		case <-ctx.Done():
			stopRelays(procs)
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// peakRSSMB returns the largest peak resident set (VmHWM) of the relays.
func peakRSSMB(procs []*relayProc) float64 {
	var peak float64
	for _, p := range procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					kb, _ := strconv.ParseFloat(f[1], 64)
					peak = max(peak, kb/1024)
				}
			}
		}
	}
	return peak
}

func stopRelays(procs []*relayProc) {
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}
