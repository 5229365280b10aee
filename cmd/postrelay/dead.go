package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/postrelay/postrelay/engine"
)

func cmdDead(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "requeue" && args[0] != "purge") {
		fmt.Fprintln(stderr, "usage: postrelay dead list|requeue|purge [--id N,...] [--topic T] [--all] [--json]")
		return usageError{}
	}
	verb := args[0]
	fs := newFlagSet("dead "+verb, stderr)
	var c common
	c.register(fs)
	idList := fs.String("id", "", "comma-separated dead letter ids")
	topic := fs.String("topic", "", "only this topic")
	all := fs.Bool("all", false, "requeue or purge every dead letter (with --topic: all of that topic)")
	limit := fs.Int("limit", 100, "list at most this many")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	q := engine.DeadLetterQuery{Topic: *topic, Limit: *limit}
	if *idList != "" {
		for _, s := range strings.Split(*idList, ",") {
			id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil {
				return usageError{fmt.Errorf("--id %q: %q is not a record id", *idList, s)}
			}
			q.IDs = append(q.IDs, id)
		}
	}
	if verb != "list" && len(q.IDs) == 0 && !*all {
		return usageError{errors.New("dead " + verb + ": name the dead letters with --id, or pass --all")}
	}
	pool, err := c.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	admin := engine.NewAdmin(pool, engine.Config{Schema: c.schema})
	switch verb {
	case "list":
		dl, err := admin.DeadLetters(ctx, q)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(dl)
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTOPIC\tKEY\tMESSAGE ID\tATTEMPTS\tDEAD SINCE\tLAST ERROR")
		for _, d := range dl {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Topic, d.Key, d.MessageID, d.Attempts,
				d.DeadLetteredAt.Format("2006-01-02 15:04:05"), oneLine(d.LastError, 80))
		}
		return tw.Flush()
	case "requeue":
		n, err := admin.Requeue(ctx, q)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "requeued %d dead letters\n", n)
	case "purge":
		n, err := admin.Purge(ctx, q)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "purged %d dead letters\n", n)
	}
	return nil
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
