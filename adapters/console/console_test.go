package console_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/console"
	"github.com/postrelay/postrelay/engine"
	"github.com/postrelay/postrelay/internal/recorder"
)

// poisonous makes b's publisher refuse the first record of key "poison"
// while the returned flag is set.
func poisonous(b *bundle) *atomic.Bool {
	var on atomic.Bool
	on.Store(true)
	b.pub.SetFail(func(_ string, m *message.Message) error {
		if on.Load() && string(m.Payload) == `{"key":"poison","n":0}` {
			return errors.New("broker refused: poison pill")
		}
		return nil
	})
	return &on
}

func deliveredKey(key string, n int) func([]recorder.Delivery) bool {
	return func(ds []recorder.Delivery) bool {
		c := 0
		for _, d := range ds {
			if d.Key == key {
				c++
			}
		}
		return c >= n
	}
}

// The poison key's first record fails once and then waits an hour: the
// stuck keys show it with its error and the two records waiting behind it,
// and the status shows the live relay, the backlog and the rates.
func TestConsoleStatusAndStuckKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	poisonous(b)
	// The first sample of the table counters, before any delivery.
	require.Equal(t, http.StatusOK, b.get(t, "/api/v1/history").code)
	b.write(t, recs("orders", "poison", 3)...)
	b.write(t, recs("orders", "fine", 5)...)
	b.startEngine(t)
	require.NoError(t, b.pub.WaitFor(30*time.Second, deliveredKey("fine", 5)))

	var keys []stuck
	waitFor(t, 30*time.Second, "the poison key is stuck", func() (bool, error) {
		keys = b.stuckKeys(t, "")
		return len(keys) == 1 && keys[0].Attempts == 1, fmt.Errorf("stuck keys %+v", keys)
	})
	k := keys[0]
	require.Equal(t, "poison", k.Key)
	require.Equal(t, "orders", k.Topic)
	require.Equal(t, "failing", k.State)
	require.Contains(t, k.LastError, "poison pill")
	require.Equal(t, 2, k.Waiting, "records waiting behind the head")

	// Filters: by key (its partition only) and by a topic it does not have.
	require.Len(t, b.stuckKeys(t, "?key=poison"), 1)
	require.Empty(t, b.stuckKeys(t, "?key=fine"))
	require.Empty(t, b.stuckKeys(t, "?topic=other"))

	var st struct {
		Partitions int `json:"partitions"`
		Instances  []struct {
			Live       bool `json:"live"`
			Partitions int  `json:"partitions"`
		} `json:"instances"`
		Backlog       int64    `json:"backlog"`
		BacklogExact  bool     `json:"backlog_exact"`
		Held          int64    `json:"held"`
		OldestPending float64  `json:"oldest_pending_age_s"`
		DeadLetters   int64    `json:"dead_letters"`
		DeliveredPerS *float64 `json:"delivered_per_s"`
		FailuresPerS  *float64 `json:"failures_per_s"`
	}
	waitFor(t, 30*time.Second, "status shows the relay owning every partition", func() (bool, error) {
		a := b.get(t, "/api/v1/status")
		require.Equal(t, http.StatusOK, a.code, "%s", a.body)
		a.decode(t, &st)
		return len(st.Instances) == 1 && st.Instances[0].Partitions == 16 && st.DeliveredPerS != nil, fmt.Errorf("%s", a.body)
	})
	require.Equal(t, 16, st.Partitions)
	require.True(t, st.Instances[0].Live)
	require.Equal(t, int64(3), st.Backlog)
	require.True(t, st.BacklogExact)
	require.Equal(t, int64(1), st.Held)
	require.Positive(t, st.OldestPending)
	require.Zero(t, st.DeadLetters)
	require.NotNil(t, st.DeliveredPerS, "rates after two samples")

	// The partitions view: the poison key's partition holds 3 records.
	var parts struct {
		Partitions []struct {
			Partition int    `json:"partition"`
			Owner     string `json:"owner"`
			Epoch     int64  `json:"epoch"`
			Pending   int64  `json:"pending"`
			Held      int64  `json:"held"`
		} `json:"partitions"`
	}
	b.get(t, "/api/v1/partitions").decode(t, &parts)
	require.Len(t, parts.Partitions, 16)
	for _, p := range parts.Partitions {
		require.NotEmpty(t, p.Owner, "partition %d", p.Partition)
		require.Positive(t, p.Epoch)
		if p.Partition == k.Partition {
			require.Equal(t, int64(3), p.Pending)
			require.Equal(t, int64(1), p.Held)
		} else {
			require.Zero(t, p.Pending)
		}
	}

	// The history gets points as samples accumulate; the deliveries show
	// up in the rates once PostgreSQL's statistics have them.
	waitFor(t, 30*time.Second, "the history shows deliveries", func() (bool, error) {
		var h struct {
			Points []console.Point `json:"points"`
		}
		b.get(t, "/api/v1/history").decode(t, &h)
		sum := 0.0
		for _, p := range h.Points {
			sum += p.DeliveredPerS * p.Seconds
		}
		return sum >= 4.5, fmt.Errorf("%d points, %.1f delivered", len(h.Points), sum)
	})
}

// Retry now: the poison head is attempted again at once (its backoff was an
// hour); with the broker healed it is delivered, and the key flows.
func TestConsoleRetryNow(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	poison := poisonous(b)
	b.write(t, recs("orders", "poison", 3)...)
	b.startEngine(t)
	var keys []stuck
	waitFor(t, 30*time.Second, "the poison key is stuck", func() (bool, error) {
		keys = b.stuckKeys(t, "")
		return len(keys) == 1 && keys[0].Attempts == 1, fmt.Errorf("%+v", keys)
	})
	poison.Store(false)
	a := b.post(t, "/api/v1/stuck-keys/retry", testToken, map[string]any{
		"records": []map[string]any{{"partition": keys[0].Partition, "id": keys[0].RecordID}}})
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	require.JSONEq(t, `{"retried":1}`, string(a.body))
	require.NoError(t, b.pub.WaitFor(30*time.Second, deliveredKey("poison", 3)))
	require.NoError(t, recorder.CheckKeyOrder(b.pub.Deliveries()))
	waitFor(t, 30*time.Second, "no stuck key once the deliveries are complete", func() (bool, error) {
		return len(b.stuckKeys(t, "")) == 0, nil
	})

	// A record that is not held (or gone) is not touched.
	a = b.post(t, "/api/v1/stuck-keys/retry", testToken, map[string]any{
		"records": []map[string]any{{"partition": keys[0].Partition, "id": keys[0].RecordID}}})
	require.JSONEq(t, `{"retried":0}`, string(a.body))
}

// Dead-letter now: the poison head moves to the dead letters in one
// statement, and the records waiting behind it are delivered; requeueing
// it (broker healed) delivers it after them.
func TestConsoleDeadLetterNowAndRequeue(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	poison := poisonous(b)
	b.write(t, recs("orders", "poison", 3)...)
	b.startEngine(t)
	var keys []stuck
	waitFor(t, 30*time.Second, "the poison key is stuck", func() (bool, error) {
		keys = b.stuckKeys(t, "")
		return len(keys) == 1 && keys[0].Attempts == 1, fmt.Errorf("%+v", keys)
	})
	a := b.post(t, "/api/v1/stuck-keys/dead-letter", testToken, map[string]any{
		"records": []map[string]any{{"partition": keys[0].Partition, "id": keys[0].RecordID}}})
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	require.JSONEq(t, `{"dead_lettered":1}`, string(a.body))
	require.NoError(t, b.pub.WaitFor(30*time.Second, deliveredKey("poison", 2)))
	require.Equal(t, 1, b.count(t, "dead_letters"))

	var list struct {
		DeadLetters []struct {
			ID        int64  `json:"id"`
			Key       string `json:"key"`
			Attempts  int    `json:"attempts"`
			LastError string `json:"last_error"`
		} `json:"dead_letters"`
	}
	b.get(t, "/api/v1/dead-letters?key=poison").decode(t, &list)
	require.Len(t, list.DeadLetters, 1)
	require.Equal(t, keys[0].RecordID, list.DeadLetters[0].ID)
	require.Equal(t, 1, list.DeadLetters[0].Attempts)
	require.Contains(t, list.DeadLetters[0].LastError, "poison pill")

	var rec struct {
		State string `json:"state"`
	}
	b.get(t, fmt.Sprintf("/api/v1/records?id=%d", keys[0].RecordID)).decode(t, &rec)
	require.Equal(t, "dead_lettered", rec.State)

	poison.Store(false)
	a = b.post(t, "/api/v1/dead-letters/requeue", testToken, map[string]any{"ids": []int64{keys[0].RecordID}})
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	require.JSONEq(t, `{"requeued":1}`, string(a.body))
	require.NoError(t, b.pub.WaitFor(30*time.Second, deliveredKey("poison", 3)))
	require.Zero(t, b.count(t, "dead_letters"))
	ds := b.pub.Deliveries()
	require.Equal(t, `{"key":"poison","n":0}`, ds[len(ds)-1].Payload, "the requeued record comes after the key's later ones")
}

// Requeue and purge of a list of ids and of everything matching a filter,
// which needs the confirmation field.
func TestConsoleRequeueAndPurgeByFilter(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.addDeadLetters(t, 1, 1500, "orders", "k1", `{"a":1}`, "broker refused: Quota exceeded")
	b.addDeadLetters(t, 2001, 10, "orders", "k2", `{"a":2}`, "timeout")
	b.addDeadLetters(t, 3001, 5, "refunds", "k3", `{"a":3}`, "quota exceeded")

	// Pages of the list, newest first, with a cursor.
	var page struct {
		DeadLetters []struct {
			ID int64 `json:"id"`
		} `json:"dead_letters"`
		NextCursor *string `json:"next_cursor"`
	}
	b.get(t, "/api/v1/dead-letters?limit=3&error=QUOTA").decode(t, &page)
	require.Equal(t, []int64{3005, 3004, 3003}, []int64{page.DeadLetters[0].ID, page.DeadLetters[1].ID, page.DeadLetters[2].ID})
	require.NotNil(t, page.NextCursor)
	b.get(t, "/api/v1/dead-letters?limit=3&error=QUOTA&cursor="+*page.NextCursor).decode(t, &page)
	require.Equal(t, []int64{3002, 3001, 1500}, []int64{page.DeadLetters[0].ID, page.DeadLetters[1].ID, page.DeadLetters[2].ID})

	// A filter-wide call without the confirmation is refused, naming it.
	a := b.post(t, "/api/v1/dead-letters/purge", testToken, map[string]any{"all": true, "filter": map[string]string{"error": "quota"}})
	require.Equal(t, http.StatusBadRequest, a.code)
	require.Equal(t, "confirm", a.field(t))
	require.Equal(t, 1515, b.count(t, "dead_letters"))

	// Requeue everything of topic orders whose error mentions quota: 1,500
	// rows, moved in batches, in id order.
	a = b.post(t, "/api/v1/dead-letters/requeue", testToken, map[string]any{"all": true,
		"filter": map[string]string{"topic": "orders", "error": "quota"}, "confirm": "requeue all matching"})
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	require.JSONEq(t, `{"requeued":1500}`, string(a.body))
	require.Equal(t, 1500, b.count(t, "records"))
	require.Equal(t, 15, b.count(t, "dead_letters"))

	// Purge a list of ids, then all of topic refunds.
	a = b.post(t, "/api/v1/dead-letters/purge", testToken, map[string]any{"ids": []int64{2001, 2002, 99999}})
	require.JSONEq(t, `{"purged":2}`, string(a.body))
	a = b.post(t, "/api/v1/dead-letters/purge", testToken, map[string]any{"all": true,
		"filter": map[string]string{"topic": "refunds"}, "confirm": "purge all matching"})
	require.JSONEq(t, `{"purged":5}`, string(a.body))
	require.Equal(t, 8, b.count(t, "dead_letters"))

	// The requeued records are pending; lookups by key find them in order.
	var found struct {
		State   string `json:"state"`
		Records []struct {
			ID       int64  `json:"id"`
			State    string `json:"state"`
			Attempts int    `json:"attempts"`
		} `json:"records"`
	}
	b.get(t, "/api/v1/records?key=k1&limit=2").decode(t, &found)
	require.Equal(t, "pending", found.State)
	require.Len(t, found.Records, 2)
	require.Less(t, found.Records[0].ID, found.Records[1].ID)
	require.Zero(t, found.Records[0].Attempts)
	b.get(t, "/api/v1/records?key=nobody").decode(t, &found)
	require.Equal(t, "not_found", found.State)
}

// Mutations without a token are answered 401, with a wrong one 403, and
// change nothing; GET never reaches an action.
func TestConsoleAuthRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.addDeadLetters(t, 1, 3, "orders", "k", `{}`, "boom")
	for _, path := range []string{"/api/v1/dead-letters/requeue", "/api/v1/dead-letters/purge",
		"/api/v1/stuck-keys/retry", "/api/v1/stuck-keys/dead-letter"} {
		a := b.post(t, path, "", map[string]any{"ids": []int64{1}})
		require.Equal(t, http.StatusUnauthorized, a.code, "%s: %s", path, a.body)
		a = b.post(t, path, "wrong-token-0123456789", map[string]any{"ids": []int64{1}})
		require.Equal(t, http.StatusForbidden, a.code, "%s: %s", path, a.body)
		a = b.get(t, path+"?ids=1")
		require.GreaterOrEqual(t, a.code, 400, "GET %s: %s", path, a.body)
	}
	// A token sent some other way than Bearer is no token.
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/api/v1/dead-letters/purge", strings.NewReader(`{"ids":[1]}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Basic "+testToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Equal(t, 3, b.count(t, "dead_letters"))

	// A body over MaxBodyBytes is refused.
	a := b.post(t, "/api/v1/dead-letters/purge", testToken, `{"ids":[`+strings.Repeat("1,", 1<<20)+`1]}`)
	require.Equal(t, http.StatusRequestEntityTooLarge, a.code, "%s", a.body)
	require.Equal(t, 3, b.count(t, "dead_letters"))

	// New refuses a console that could mutate without a token.
	_, err = console.New(b.pool, console.Config{Schema: "x"})
	require.ErrorIs(t, err, console.ErrInvalidConfig)
	require.ErrorContains(t, err, "Token")
	_, err = console.New(b.pool, console.Config{Schema: "Bad-Schema", ReadOnly: true})
	require.ErrorContains(t, err, "Schema")
}

// A read-only console answers every mutation 403, even with the token, and
// serves everything else.
func TestConsoleReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *console.Config) { c.ReadOnly = true; c.Token = "" })
	b.addDeadLetters(t, 1, 3, "orders", "k", `{}`, "boom")
	for _, path := range []string{"/api/v1/dead-letters/requeue", "/api/v1/dead-letters/purge",
		"/api/v1/stuck-keys/retry", "/api/v1/stuck-keys/dead-letter"} {
		a := b.post(t, path, testToken, map[string]any{"ids": []int64{1}})
		require.Equal(t, http.StatusForbidden, a.code, "%s: %s", path, a.body)
		require.Contains(t, string(a.body), "read-only")
	}
	require.Equal(t, 3, b.count(t, "dead_letters"))
	var st struct {
		ReadOnly bool `json:"read_only"`
	}
	a := b.get(t, "/api/v1/status")
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	a.decode(t, &st)
	require.True(t, st.ReadOnly)
	require.Equal(t, http.StatusOK, b.get(t, "/api/v1/dead-letters").code)
	require.Equal(t, http.StatusOK, b.get(t, "/").code)
}

// Bad filter input is answered 400 with the field named.
func TestConsoleBadInputNamesTheField(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for _, c := range []struct{ path, field string }{
		{"/api/v1/dead-letters?limit=abc", "limit"},
		{"/api/v1/dead-letters?limit=0", "limit"},
		{"/api/v1/dead-letters?limit=501", "limit"},
		{"/api/v1/dead-letters?cursor=-5", "cursor"},
		{"/api/v1/dead-letters?topc=orders", "topc"},
		{"/api/v1/dead-letters?error=" + strings.Repeat("x", 1001), "error"},
		{"/api/v1/dead-letters/abc", "id"},
		{"/api/v1/stuck-keys?limit=1e3", "limit"},
		{"/api/v1/stuck-keys?key=%ff", "key"},
		{"/api/v1/records", "id"},
		{"/api/v1/records?id=x", "id"},
		{"/api/v1/records?id=5&key=k", "id"},
		{"/api/v1/status?verbose=1", "verbose"},
	} {
		a := b.get(t, c.path)
		require.Equal(t, http.StatusBadRequest, a.code, "%s: %s", c.path, a.body)
		require.Equal(t, c.field, a.field(t), "%s: %s", c.path, a.body)
	}
	for _, c := range []struct {
		path, body, field string
	}{
		{"/api/v1/dead-letters/requeue", `{"ids":[-1]}`, "ids[0]"},
		{"/api/v1/dead-letters/requeue", `{"ids":["x"]}`, "ids"},
		{"/api/v1/dead-letters/requeue", `{"idz":[1]}`, "idz"},
		{"/api/v1/dead-letters/requeue", `{}`, "ids"},
		{"/api/v1/dead-letters/requeue", ``, "body"},
		{"/api/v1/dead-letters/purge", `{"ids":[1],"all":true}`, "all"},
		{"/api/v1/dead-letters/purge", `{"all":true,"confirm":"yes"}`, "confirm"},
		{"/api/v1/stuck-keys/retry", `{"records":[]}`, "records"},
		{"/api/v1/stuck-keys/retry", `{"records":[{"partition":16,"id":1}]}`, "records[0].partition"},
		{"/api/v1/stuck-keys/dead-letter", `{"records":[{"partition":1}]}`, "records[0].id"},
	} {
		a := b.post(t, c.path, testToken, c.body)
		require.Equal(t, http.StatusBadRequest, a.code, "%s %s: %s", c.path, c.body, a.body)
		require.Equal(t, c.field, a.field(t), "%s %s: %s", c.path, c.body, a.body)
	}
	require.Equal(t, http.StatusNotFound, b.get(t, "/api/v1/nothing").code)
}

// A dead letter shows its payload as indented JSON or a hex dump, its
// metadata and trace id; with HidePayloads neither payload nor metadata
// values leave the server.
func TestConsoleDeadLetterDetailAndHidePayloads(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.addDeadLetters(t, 1, 1, "orders", "k", `{"card":"4111-1111","cents":42}`, "boom")
	_, err := b.pool.Exec(t.Context(), `INSERT INTO `+b.ident("dead_letters")+`
		(id, partition, key, topic, message_id, payload, metadata, created_at, attempts, last_error)
		VALUES (2, 0, 'k', 'orders', 'm2', '\x00ff10'::bytea, '{}', now(), 1, 'x')`)
	require.NoError(t, err)

	type detail struct {
		PayloadJSON   string            `json:"payload_json"`
		PayloadHex    string            `json:"payload_hex"`
		PayloadHidden bool              `json:"payload_hidden"`
		PayloadBytes  int               `json:"payload_bytes"`
		Metadata      map[string]string `json:"metadata"`
		TraceID       string            `json:"trace_id"`
	}
	var d detail
	b.get(t, "/api/v1/dead-letters/1").decode(t, &d)
	require.Equal(t, "{\n  \"card\": \"4111-1111\",\n  \"cents\": 42\n}", d.PayloadJSON)
	require.Equal(t, "acme", d.Metadata["tenant"])
	require.Equal(t, "0af7651916cd43dd8448eb211c80319c", d.TraceID)
	b.get(t, "/api/v1/dead-letters/2").decode(t, &d)
	require.Contains(t, d.PayloadHex, "00 ff 10")
	require.Equal(t, http.StatusNotFound, b.get(t, "/api/v1/dead-letters/3").code)

	con, err := console.New(b.pool, console.Config{Schema: b.cfg.Schema, ReadOnly: true, HidePayloads: true})
	require.NoError(t, err)
	hidden := &bundle{srv: httpServer(t, con)}
	a := hidden.get(t, "/api/v1/dead-letters/1")
	require.NotContains(t, string(a.body), "4111")
	require.NotContains(t, string(a.body), "acme")
	d = detail{}
	a.decode(t, &d)
	require.True(t, d.PayloadHidden)
	require.Empty(t, d.PayloadJSON)
	require.Equal(t, 31, d.PayloadBytes)
	require.Equal(t, "(hidden)", d.Metadata["tenant"])
	require.Equal(t, "0af7651916cd43dd8448eb211c80319c", d.TraceID)
	require.NotContains(t, string(hidden.get(t, "/api/v1/dead-letters").body), "4111")
}

// The page and its assets are served from the binary with a strict
// content security policy.
func TestConsolePagesServed(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for _, p := range []string{"/", "/assets/app.js", "/assets/app.css"} {
		resp, err := http.Get(b.srv.URL + p)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, p)
		require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'", p)
	}
	// Mounted under a prefix, as the package doc shows.
	mux := http.NewServeMux()
	mux.Handle("/outbox/", http.StripPrefix("/outbox", b.con))
	mounted := &bundle{srv: httpServer(t, mux)}
	for _, p := range []string{"/outbox/", "/outbox/assets/app.js", "/outbox/api/v1/status"} {
		a := mounted.get(t, p)
		require.Equal(t, http.StatusOK, a.code, "%s: %s", p, a.body)
	}
}

// lookupAnswer is GET api/v1/records.
type lookupAnswer struct {
	State   string `json:"state"`
	Records []struct {
		ID        int64  `json:"id"`
		Partition int    `json:"partition"`
		State     string `json:"state"`
		Key       string `json:"key"`
		MessageID string `json:"message_id"`
	} `json:"records"`
	Complete  bool    `json:"complete"`
	Searched  string  `json:"searched"`
	NextAfter *string `json:"next_after"`
}

func (b *bundle) lookup(t *testing.T, query string) lookupAnswer {
	t.Helper()
	a := b.get(t, "/api/v1/records?"+query)
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	var v lookupAnswer
	a.decode(t, &v)
	return v
}

// A lookup reads a bounded number of records and says what it read: by
// message id without a key, the head of every partition and the held
// records (and points to the key); with a key, the first 5,000 records of
// the key's partition, continued with after; dead letters by message id
// through their index, all of them.
func TestConsoleLookupIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	hot := recs("orders", "hot", 5_050)
	for i := range hot {
		hot[i].MessageID = fmt.Sprint("m-", i)
	}
	b.write(t, hot...)
	other := recs("orders", "other", 3)
	for i := range other {
		other[i].MessageID = fmt.Sprint("o-", i)
	}
	b.write(t, other...)
	// m-4000 is held (a retry backoff): far from its partition's head,
	// but the held records are searched.
	_, err := b.pool.Exec(ctx, "UPDATE "+b.ident("records")+" SET attempts = 1, available_at = now() + interval '1 hour' WHERE message_id = 'm-4000'")
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `INSERT INTO `+b.ident("dead_letters")+`
		(id, partition, key, topic, message_id, payload, metadata, created_at, attempts, last_error)
		VALUES (900000, 3, 'gone', 'orders', 'dead-1', '\x7b7d', '{}', now(), 10, 'refused')`)
	require.NoError(t, err)

	// Without a key: the head of each partition (5,000 / 16 = 312 records).
	a := b.lookup(t, "message_id=m-5")
	require.Equal(t, "pending", a.State)
	require.Equal(t, "m-5", a.Records[0].MessageID)
	require.False(t, a.Complete)
	require.Contains(t, a.Searched, "the first 312 pending records of each of the 16 partitions")
	require.Contains(t, a.Searched, "give the record's key")
	require.Nil(t, a.NextAfter)
	a = b.lookup(t, "message_id=m-4000")
	require.Equal(t, "held", a.State)
	a = b.lookup(t, "message_id=m-5040")
	require.Equal(t, "not_found", a.State)
	require.False(t, a.Complete)
	a = b.lookup(t, "message_id=dead-1")
	require.Equal(t, "dead_lettered", a.State)
	require.Contains(t, a.Searched, "every dead letter")

	// With the key: its partition's first 5,000 records, then the rest.
	a = b.lookup(t, "message_id=m-5040&key=hot")
	require.Equal(t, "not_found", a.State)
	require.False(t, a.Complete)
	require.Contains(t, a.Searched, "the first 5000 pending records of partition")
	require.NotNil(t, a.NextAfter)
	a = b.lookup(t, "message_id=m-5040&key=hot&after="+*a.NextAfter)
	require.Equal(t, "pending", a.State)
	require.Equal(t, "m-5040", a.Records[0].MessageID)
	require.True(t, a.Complete, a.Searched)
	require.Nil(t, a.NextAfter)

	// A key: its first records in id order, and where to go on.
	a = b.lookup(t, "key=hot&limit=3")
	require.Equal(t, []string{"m-0", "m-1", "m-2"}, []string{a.Records[0].MessageID, a.Records[1].MessageID, a.Records[2].MessageID})
	require.False(t, a.Complete)
	require.NotNil(t, a.NextAfter)
	a = b.lookup(t, "key=hot&limit=3&after="+*a.NextAfter)
	require.Equal(t, "m-5000", a.Records[0].MessageID)
	require.True(t, a.Complete, a.Searched)
	// A partition within the bound is read whole (unless it is hot's).
	if b.partitionOf("other") != b.partitionOf("hot") {
		a = b.lookup(t, "key=other")
		require.Len(t, a.Records, 3)
		require.True(t, a.Complete, a.Searched)
		require.Contains(t, a.Searched, "(all of them)")
	}

	// after needs a key.
	r := b.get(t, "/api/v1/records?message_id=m-1&after=5")
	require.Equal(t, http.StatusBadRequest, r.code)
	require.Equal(t, "after", r.field(t))
}

func (b *bundle) partitionOf(key string) int { return engine.Partition(key, b.cfg.Partitions) }

// A filter-wide purge reads the dead letters a window at a time, and still
// reaches matches far apart.
func TestConsolePurgeByFilterAcrossWindows(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.addDeadLetters(t, 1, 2, "orders", "k1", `{}`, "no exchange")
	b.addDeadLetters(t, 3, 25_000, "orders", "k2", `{}`, "timeout")
	b.addDeadLetters(t, 30_000, 3, "orders", "k3", `{}`, "NO EXCHANGE here")
	a := b.post(t, "/api/v1/dead-letters/purge", testToken, map[string]any{"all": true,
		"filter": map[string]string{"error": "no exchange"}, "confirm": "purge all matching"})
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	require.JSONEq(t, `{"purged":5}`, string(a.body))
	require.Equal(t, 25_000, b.count(t, "dead_letters"))
}

// The backlog (pending, held, oldest per partition) is read once per 5 s
// for every viewer; a change made from the console forgets it.
func TestConsoleBacklogReadOncePerInterval(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.write(t, recs("orders", "k1", 3)...)
	p := b.partitionOf("k1")
	pending := func() int64 {
		var v struct {
			Partitions []struct {
				Pending int64 `json:"pending"`
			} `json:"partitions"`
		}
		b.get(t, "/api/v1/partitions").decode(t, &v)
		return v.Partitions[p].Pending
	}
	read := time.Now()
	require.Equal(t, int64(3), pending())
	b.write(t, recs("orders", "k1", 2)...)
	got := pending()
	if time.Since(read) < 5*time.Second { // else the backlog was read again, rightly
		require.Equal(t, int64(3), got, "the backlog read a moment ago")
	}
	a := b.post(t, "/api/v1/stuck-keys/retry", testToken, map[string]any{"records": []map[string]any{{"partition": p, "id": 1}}})
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	require.Equal(t, int64(5), pending())
}
