package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/postrelay/postrelay/engine"
)

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	var c common
	c.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	leaseTTL := fs.Duration("lease-ttl", engine.LeaseTTLDefault, "instances whose heartbeat is older are shown as dead")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := engine.Config{Schema: c.schema, LeaseTTL: *leaseTTL, HeartbeatInterval: min(engine.HeartbeatIntervalDefault, *leaseTTL/3)}
	if err := cfg.WithDefaults().Validate(); err != nil {
		return usageError{err}
	}
	pool, err := c.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := engine.NewAdmin(pool, cfg).Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(stdout, "schema %s (version %d), %d partitions\n", st.Schema, st.SchemaVersion, st.Partitions)
	fmt.Fprintf(stdout, "pending %d, oldest pending %s, dead letters %d\n\n", st.Pending, round(st.OldestPendingAge), st.DeadLetters)
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tHOST\tPID\tLIVE\tHEARTBEAT AGE\tPARTITIONS")
	for _, i := range st.Instances {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%s\t%d\n", i.ID, i.Hostname, i.PID, i.Live, round(i.HeartbeatAge), i.Partitions)
	}
	_ = tw.Flush()
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tOWNER\tEPOCH\tLEASE LEFT\tPENDING\tOLDEST")
	for _, p := range st.PartitionStatus {
		owner := p.Owner
		if owner == "" {
			owner = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\n", p.Partition, owner, p.Epoch, round(p.LeaseRemaining), p.Pending, round(p.OldestPendingAge))
	}
	return tw.Flush()
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
