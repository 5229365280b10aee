package console

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/postrelay/postrelay/engine"
)

// Bounds of the API's queries.
const (
	limitDefault   = 50
	limitMax       = 500
	textMax        = 1000  // longest filter text
	heldScan       = 10000 // held records read for the stuck keys
	waitingWindow  = 256   // records after a stuck head searched for its key
	deadWindow     = 10000 // dead letters read per list page, and searched for a key
	recordScan     = 5000  // pending records read per lookup (by key or message id)
	idsMax         = 1000  // ids in one mutating call
	moveBatch      = 1000  // dead letters moved per statement of a filter-wide call
	payloadShowMax = 64 << 10
	operatorReason = "dead-lettered from the console before any failed attempt"
)

// ---- query parameters ----

func textParam(r *http.Request, name string) (string, error) {
	v := r.URL.Query().Get(name)
	if len(v) > textMax {
		return "", badField(name, fmt.Sprintf("longer than %d bytes", textMax))
	}
	if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
		return "", badField(name, "not valid UTF-8 text")
	}
	return v, nil
}

func intParam(r *http.Request, name string, def, lo, hi int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, badField(name, fmt.Sprintf("%q: want an integer between %d and %d", v, lo, hi))
	}
	return n, nil
}

// ---- status, history, partitions ----

// statusAnswer is GET api/v1/status.
type statusAnswer struct {
	Schema     string        `json:"schema"`
	Partitions int           `json:"partitions"`
	Instances  []instanceRow `json:"instances"`
	// Backlog is the pending records: exact when BacklogExact, else
	// PostgreSQL's estimate (a partition held more than its count cap).
	Backlog       int64   `json:"backlog"`
	BacklogExact  bool    `json:"backlog_exact"`
	Held          int64   `json:"held"`
	OldestPending float64 `json:"oldest_pending_age_s"`
	DeadLetters   int64   `json:"dead_letters"`
	// DeadLettersCapped says there are more than DeadLetters.
	DeadLettersCapped bool `json:"dead_letters_capped"`
	// The rates over RateWindow seconds (up to the last minute), null
	// until two samples exist.
	DeliveredPerS    *float64 `json:"delivered_per_s"`
	FailuresPerS     *float64 `json:"failures_per_s"`
	DeadLetteredPerS *float64 `json:"dead_lettered_per_s"`
	RateWindow       float64  `json:"rate_window_s"`
	ReadOnly         bool     `json:"read_only"`
	HidePayloads     bool     `json:"hide_payloads"`
}

func (c *Console) handleStatus(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := c.sampler.sampleIfDue(ctx); err != nil {
		return wrapQuery("read table statistics", err)
	}
	n, err := c.partitionCount(ctx)
	if err != nil {
		return err
	}
	parts, err := c.readPartitions(ctx, n)
	if err != nil {
		return wrapQuery("read partitions", err)
	}
	inst, err := c.store.instances(ctx)
	if err != nil {
		return wrapQuery("read instances", err)
	}
	dead, capped, err := c.store.deadCount(ctx, DeadCountParams{Cap: DeadLetterCountCap})
	if err != nil {
		return wrapQuery("count dead letters", err)
	}
	a := statusAnswer{Schema: c.cfg.Schema, Partitions: n, Instances: inst, BacklogExact: true,
		DeadLetters: dead, DeadLettersCapped: capped, ReadOnly: c.cfg.ReadOnly, HidePayloads: c.cfg.HidePayloads}
	owned := map[string]int{}
	for _, p := range parts {
		a.Backlog += p.Pending
		a.Held += p.Held
		a.BacklogExact = a.BacklogExact && !p.PendingCapped
		a.OldestPending = max(a.OldestPending, p.OldestAge)
		if p.Owner != "" {
			owned[p.Owner]++
		}
	}
	if !a.BacklogExact {
		if ss := c.sampler.samples(); len(ss) > 0 {
			a.Backlog = max(a.Backlog, ss[len(ss)-1].c.recordsLive)
		}
	}
	if a.Instances == nil {
		a.Instances = []instanceRow{}
	}
	for i := range a.Instances {
		in := &a.Instances[i]
		in.Live = in.HeartbeatAge < c.cfg.LeaseTTL.Seconds()
		in.Partitions = owned[in.ID]
	}
	if p, window, ok := c.sampler.current(); ok {
		a.DeliveredPerS, a.FailuresPerS, a.DeadLetteredPerS = &p.DeliveredPerS, &p.FailuresPerS, &p.DeadLetteredPerS
		a.RateWindow = window
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// historyAnswer is GET api/v1/history.
type historyAnswer struct {
	Interval float64 `json:"interval_s"`
	Points   []Point `json:"points"`
}

func (c *Console) handleHistory(w http.ResponseWriter, r *http.Request) error {
	if err := c.sampler.sampleIfDue(r.Context()); err != nil {
		return wrapQuery("read table statistics", err)
	}
	writeJSON(w, http.StatusOK, historyAnswer{Interval: c.cfg.SampleInterval.Seconds(), Points: c.sampler.history()})
	return nil
}

// partitionsAnswer is GET api/v1/partitions.
type partitionsAnswer struct {
	PendingCap int            `json:"pending_cap"`
	Partitions []partitionRow `json:"partitions"`
}

func (c *Console) handlePartitions(w http.ResponseWriter, r *http.Request) error {
	n, err := c.partitionCount(r.Context())
	if err != nil {
		return err
	}
	parts, err := c.readPartitions(r.Context(), n)
	if err != nil {
		return wrapQuery("read partitions", err)
	}
	writeJSON(w, http.StatusOK, partitionsAnswer{PendingCap: pendingCap(n), Partitions: parts})
	return nil
}

// ---- stuck keys ----

// stuckAnswer is GET api/v1/stuck-keys.
type stuckAnswer struct {
	StuckKeys []stuckRow `json:"stuck_keys"`
	// WaitingWindow is how many records after each head were searched for
	// the key's waiting records.
	WaitingWindow int `json:"waiting_window"`
}

func (c *Console) handleStuckKeys(w http.ResponseWriter, r *http.Request) error {
	topic, err := textParam(r, "topic")
	if err != nil {
		return err
	}
	key, err := textParam(r, "key")
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", limitDefault, 1, limitMax)
	if err != nil {
		return err
	}
	p := StuckKeysParams{HeldScan: heldScan, Partition: -1, Topic: topic, Key: key, Limit: int(limit), WaitingWindow: waitingWindow}
	if key != "" {
		n, err := c.partitionCount(r.Context())
		if err != nil {
			return err
		}
		p.Partition = engine.Partition(key, n)
	}
	rows, err := c.store.stuckKeys(r.Context(), p)
	if err != nil {
		return wrapQuery("read stuck keys", err)
	}
	writeJSON(w, http.StatusOK, stuckAnswer{StuckKeys: rows, WaitingWindow: waitingWindow})
	return nil
}

// recordRef names a record by its primary key.
type recordRef struct {
	Partition *int   `json:"partition"`
	ID        *int64 `json:"id"`
}

// recordsBody is the body of the stuck-key actions.
type recordsBody struct {
	Records []recordRef `json:"records"`
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return err
		case errors.As(err, &te):
			return badField(te.Field, fmt.Sprintf("want %s, got JSON %s", te.Type, te.Value))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return badField(name, "unknown field")
		case errors.Is(err, io.EOF):
			return badField("body", "empty: want a JSON object")
		default:
			return badField("body", "not a JSON object: "+err.Error())
		}
	}
	if dec.More() {
		return badField("body", "more than one JSON value")
	}
	return nil
}

func (c *Console) refs(r *http.Request) (RecordRefs, error) {
	var b recordsBody
	if err := decodeBody(r, &b); err != nil {
		return RecordRefs{}, err
	}
	if len(b.Records) == 0 || len(b.Records) > idsMax {
		return RecordRefs{}, badField("records", fmt.Sprintf("want 1 to %d records, got %d", idsMax, len(b.Records)))
	}
	n, err := c.partitionCount(r.Context())
	if err != nil {
		return RecordRefs{}, err
	}
	refs := RecordRefs{Channel: c.channel, Reason: operatorReason}
	for i, x := range b.Records {
		switch {
		case x.Partition == nil || *x.Partition < 0 || *x.Partition >= n:
			return RecordRefs{}, badField(fmt.Sprintf("records[%d].partition", i), fmt.Sprintf("want a partition between 0 and %d", n-1))
		case x.ID == nil || *x.ID <= 0:
			return RecordRefs{}, badField(fmt.Sprintf("records[%d].id", i), "want a positive record id")
		}
		refs.Partitions = append(refs.Partitions, int32(*x.Partition))
		refs.IDs = append(refs.IDs, *x.ID)
	}
	return refs, nil
}

func (c *Console) handleRetry(w http.ResponseWriter, r *http.Request) error {
	refs, err := c.refs(r)
	if err != nil {
		return err
	}
	n, err := c.store.retryNow(r.Context(), refs)
	if err != nil {
		return wrapQuery("retry records", err)
	}
	c.log.Info("console: held records made available now", "asked", len(refs.IDs), "count", n, "remote_addr", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]int{"retried": n})
	return nil
}

func (c *Console) handleDeadLetterNow(w http.ResponseWriter, r *http.Request) error {
	refs, err := c.refs(r)
	if err != nil {
		return err
	}
	n, err := c.store.deadLetterNow(r.Context(), refs)
	if err != nil {
		return wrapQuery("dead-letter records", err)
	}
	c.log.Info("console: held records dead-lettered", "asked", len(refs.IDs), "count", n, "remote_addr", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]int{"dead_lettered": n})
	return nil
}

// ---- dead letters ----

// deadListAnswer is GET api/v1/dead-letters.
type deadListAnswer struct {
	DeadLetters []deadRow `json:"dead_letters"`
	// NextCursor continues the list (pass it as cursor); null at the end.
	NextCursor *string `json:"next_cursor"`
}

func deadFilterParams(r *http.Request) (DeadFilter, error) {
	var f DeadFilter
	var err error
	if f.Topic, err = textParam(r, "topic"); err != nil {
		return f, err
	}
	if f.Key, err = textParam(r, "key"); err != nil {
		return f, err
	}
	f.Error, err = textParam(r, "error")
	return f, err
}

func (c *Console) handleDeadLetters(w http.ResponseWriter, r *http.Request) error {
	f, err := deadFilterParams(r)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", limitDefault, 1, limitMax)
	if err != nil {
		return err
	}
	before, err := intParam(r, "cursor", math.MaxInt64, 1, math.MaxInt64)
	if err != nil {
		return err
	}
	rows, err := c.store.deadList(r.Context(), DeadListParams{Before: before, Window: deadWindow, Filter: f, Limit: int(limit)})
	if err != nil {
		return wrapQuery("list dead letters", err)
	}
	a := deadListAnswer{DeadLetters: rows}
	switch {
	case len(rows) == int(limit):
		next := strconv.FormatInt(rows[len(rows)-1].ID, 10)
		a.NextCursor = &next
	default:
		// The page is short: either the table ended, or the window did
		// (then the list goes on below the window's last id).
		end, err := c.store.deadWindowEnd(r.Context(), DeadWindowEndParams{Before: before, Window: deadWindow})
		if err != nil {
			return wrapQuery("list dead letters", err)
		}
		if end > 0 {
			next := strconv.FormatInt(end, 10)
			a.NextCursor = &next
		}
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// deadDetail is GET api/v1/dead-letters/{id}.
type deadDetail struct {
	deadRow
	// Exactly one of PayloadJSON (indented) and PayloadHex (a hex dump) is
	// set, unless PayloadHidden.
	PayloadJSON      string            `json:"payload_json,omitempty"`
	PayloadHex       string            `json:"payload_hex,omitempty"`
	PayloadTruncated bool              `json:"payload_truncated"`
	PayloadHidden    bool              `json:"payload_hidden"`
	Metadata         map[string]string `json:"metadata"`
}

func (c *Console) handleDeadLetter(w http.ResponseWriter, r *http.Request) error {
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return badField("id", fmt.Sprintf("%q: want a positive dead letter id", raw))
	}
	d, payload, md, found, err := c.store.deadOne(r.Context(), DeadOneParams{ID: id, PayloadBytes: payloadShowMax})
	if err != nil {
		return wrapQuery("read dead letter", err)
	}
	if !found {
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no dead letter %d", id)})
		return nil
	}
	a := deadDetail{deadRow: d, PayloadTruncated: d.PayloadBytes > len(payload)}
	a.Metadata, _ = engine.DecodeMetadata([]byte(md))
	if c.cfg.HidePayloads {
		a.PayloadHidden = true
		for k := range a.Metadata {
			a.Metadata[k] = "(hidden)"
		}
	} else {
		var buf bytes.Buffer
		if !a.PayloadTruncated && json.Valid(payload) && json.Indent(&buf, payload, "", "  ") == nil {
			a.PayloadJSON = buf.String()
		} else {
			a.PayloadHex = hex.Dump(payload)
		}
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// deadMoveBody is the body of requeue and purge: ids, or all dead letters
// matching filter with confirm set to "<verb> all matching".
type deadMoveBody struct {
	IDs     []int64    `json:"ids"`
	All     bool       `json:"all"`
	Filter  DeadFilter `json:"filter"`
	Confirm string     `json:"confirm"`
}

func (c *Console) handleDeadMove(w http.ResponseWriter, r *http.Request, requeue bool) error {
	verb := "purge"
	if requeue {
		verb = "requeue"
	}
	var b deadMoveBody
	if err := decodeBody(r, &b); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{{"filter.topic", b.Filter.Topic}, {"filter.key", b.Filter.Key}, {"filter.error", b.Filter.Error}} {
		if len(f.v) > textMax {
			return badField(f.name, fmt.Sprintf("longer than %d bytes", textMax))
		}
	}
	var n int
	switch {
	case len(b.IDs) > 0 && b.All:
		return badField("all", "give either ids or all, not both")
	case len(b.IDs) > 0:
		if len(b.IDs) > idsMax {
			return badField("ids", fmt.Sprintf("at most %d ids, got %d", idsMax, len(b.IDs)))
		}
		if b.Filter != (DeadFilter{}) {
			return badField("filter", "applies only with all")
		}
		for i, id := range b.IDs {
			if id <= 0 {
				return badField(fmt.Sprintf("ids[%d]", i), fmt.Sprintf("%d: want a positive dead letter id", id))
			}
		}
		q := engine.DeadLetterQuery{IDs: b.IDs}
		var err error
		if requeue {
			n, err = c.admin.Requeue(r.Context(), q)
		} else {
			n, err = c.admin.Purge(r.Context(), q)
		}
		if err != nil {
			return err
		}
	case b.All:
		if want := verb + " all matching"; b.Confirm != want {
			return badField("confirm", fmt.Sprintf("%q: a filter-wide %s needs confirm = %q", b.Confirm, verb, want))
		}
		p := DeadMoveParams{Filter: b.Filter, Requeue: requeue, Batch: moveBatch, Window: deadWindow, Channel: c.channel}
		for {
			moved, after, done, err := c.store.deadMove(r.Context(), p)
			if err != nil {
				return wrapQuery(verb+" dead letters", fmt.Errorf("after %d done: %w", n, err))
			}
			n += moved
			if done {
				break
			}
			p.After = after
		}
	default:
		return badField("ids", "name the dead letters with ids, or set all (with filter and confirm)")
	}
	c.log.Info("console: dead letters "+verb+"d", "count", n, "ids", len(b.IDs), "all", b.All,
		"topic", b.Filter.Topic, "remote_addr", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]int{verb + "d": n})
	return nil
}

// ---- record lookup ----

// recordsAnswer is GET api/v1/records.
type recordsAnswer struct {
	// State is the first record's state, or "not_found".
	State   string      `json:"state"`
	Records []recordRow `json:"records"`
	// Complete says the lookup read every pending record and dead letter
	// that could match. When it did not, Searched says what it read, and
	// NextAfter (a lookup with a key) continues the scan: pass it as after.
	Complete  bool    `json:"complete"`
	Searched  string  `json:"searched"`
	NextAfter *string `json:"next_after"`
}

func (c *Console) handleRecords(w http.ResponseWriter, r *http.Request) error {
	id, err := intParam(r, "id", 0, 1, math.MaxInt64)
	if err != nil {
		return err
	}
	msg, err := textParam(r, "message_id")
	if err != nil {
		return err
	}
	key, err := textParam(r, "key")
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", limitDefault, 1, limitMax)
	if err != nil {
		return err
	}
	after, err := intParam(r, "after", 0, 0, math.MaxInt64)
	if err != nil {
		return err
	}
	switch {
	case id == 0 && msg == "" && key == "":
		return badField("id", "give a record id, a message_id or a key")
	case id != 0 && (msg != "" || key != ""):
		return badField("id", "give a record id alone")
	case after != 0 && key == "":
		return badField("after", "continues a lookup with a key only")
	}
	n, err := c.partitionCount(r.Context())
	if err != nil {
		return err
	}
	p := LookupParams{ID: id, MessageID: msg, Key: key, Partition: -1, After: after, Scan: recordScan, HeldScan: recordScan,
		DeadWindow: deadWindow, SkipDead: after > 0, Limit: int(limit)}
	if key != "" {
		p.Partition = engine.Partition(key, n)
	}
	for i := range n {
		p.Partitions = append(p.Partitions, int32(i))
	}
	res, err := c.store.lookup(r.Context(), p)
	if err != nil {
		return wrapQuery("look up records", err)
	}
	a := recordsAnswer{State: "not_found", Records: res.rows, Complete: res.pendingComplete && res.deadComplete}
	if len(res.rows) > 0 {
		a.State = res.rows[0].State
	}
	a.Searched = searched(p, res, n)
	if res.scanEnd > 0 {
		next := strconv.FormatInt(res.scanEnd, 10)
		a.NextAfter = &next
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// searched says in words what a lookup read.
func searched(p LookupParams, res lookupResult, partitions int) string {
	if p.ID > 0 {
		return "every partition and the dead letters by record id"
	}
	var b strings.Builder
	from := "the first"
	if p.After > 0 {
		from = fmt.Sprintf("after record %d, the next", p.After)
	}
	switch {
	case p.Partition >= 0 && res.pendingComplete:
		fmt.Fprintf(&b, "%s %d pending records of partition %d (all of them)", from, res.scanned, p.Partition)
	case p.Partition >= 0:
		fmt.Fprintf(&b, "%s %d pending records of partition %d (it holds more: continue with after=%d)", from, res.scanned, p.Partition, res.scanEnd)
	case res.pendingComplete:
		fmt.Fprintf(&b, "every pending record (no partition holds more than %d)", res.perPartition)
	default:
		fmt.Fprintf(&b, "the first %d pending records of each of the %d partitions and the first %d held records; "+
			"%d partitions hold more: give the record's key to search its partition", res.perPartition, partitions, p.HeldScan, res.headsBeyond)
	}
	switch {
	case p.SkipDead:
		b.WriteString("; dead letters were searched on the first page")
	case p.MessageID != "":
		b.WriteString("; every dead letter")
	case res.deadComplete:
		b.WriteString("; every dead letter")
	default:
		fmt.Fprintf(&b, "; the newest %d dead letters (the key's older ones are not shown)", p.DeadWindow)
	}
	return b.String()
}
