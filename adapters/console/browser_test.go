package console_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/postrelay/postrelay/adapters/console"
	"github.com/postrelay/postrelay/internal/recorder"
)

// chromiumPath finds Debian's chromium, failing the test with the command
// that installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: run `bash .ci/browser` (apt-get update && apt-get install -y chromium)")
	return ""
}

// browser starts headless Chromium with a fresh profile and returns a tab
// context; everything stops when the test ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	tctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	require.NoError(t, chromedp.Do(tctx), "start chromium")
	return tctx
}

// screenshot writes the page to docs/console-NAME.png when
// POSTRELAY_SCREENSHOTS=1 (so CI leaves the tree alone).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("POSTRELAY_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	path := filepath.Join("..", "..", "docs", "console-"+name+".png")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("wrote %s (%d bytes)", path, len(png))
}

// The console in a real browser on a live relay (two engines) with a poison
// record: the stuck key shows up on its page, "dead-letter now" (asking for
// the token once) lets the records behind it go, and "requeue" on the
// dead letter, once the broker accepts it, gets it delivered; the lookup
// then finds nothing of the key left.
func TestConsoleBrowser(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *console.Config) { c.SampleInterval = 200 * time.Millisecond })
	poison := poisonous(b)
	b.addDeadLetters(t, 900001, 4, "invoices", "customer-12", `{"invoice":"inv-3","cents":1250}`, "kafka: message too large (broker limit 1 MiB)")
	b.addDeadLetters(t, 900011, 2, "refunds", "customer-40", `{"refund":"r-7"}`, "amqp: NOT_FOUND - no exchange 'refunds'")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.con.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	for i := range 2 {
		cfg := b.cfg
		cfg.InstanceID = fmt.Sprintf("relay-%c", 'a'+i)
		b.startEngineConfig(t, cfg)
	}
	for i := range 40 {
		b.write(t, recs("orders", fmt.Sprintf("customer-%d", i), 5)...)
	}
	b.write(t, recs("orders", "poison", 3)...)
	require.NoError(t, b.pub.WaitFor(60*time.Second, deliveredKey("customer-39", 5)))

	bctx := browser(t)
	url := b.srv.URL + "/"
	// Overview: the live relays and the chart.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(url+"#overview"),
		chromedp.WaitVisible(chromedp.CSS(`#chart-rates svg`)),
	))
	waitText(t, bctx, `#ov-relays`, "2")
	waitText(t, bctx, `#ov-held`, "1")
	screenshot(t, bctx, "overview")

	// Partitions: a grid coloured by owner.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(url+"#partitions"),
		chromedp.WaitVisible(chromedp.CSS(`#grid .cell[data-partition="15"]`)),
	))
	screenshot(t, bctx, "partitions")

	// Stuck keys: the poison key, failing, two records behind it.
	sel := `#stuck-rows tr[data-key="poison"]`
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(url+"#stuck"),
		chromedp.WaitVisible(chromedp.CSS(sel)),
	))
	row, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err)
	require.Contains(t, row, "poison pill")
	require.Contains(t, row, "failing")
	screenshot(t, bctx, "stuck-keys")

	// Dead-letter it now: confirm, give the token (asked once), and the
	// two records waiting behind it are delivered.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(sel+` button[data-action="dead-letter"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-dialog`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)),
		chromedp.WaitVisible(chromedp.CSS(`#token-dialog`)),
		chromedp.SendKeys(chromedp.CSS(`#token-input`), testToken),
		chromedp.Click(chromedp.CSS(`#token-ok`)),
	))
	require.NoError(t, b.pub.WaitFor(30*time.Second, deliveredKey("poison", 2)))
	var headID int64
	require.NoError(t, b.pool.QueryRow(t.Context(), `SELECT id FROM `+b.ident("dead_letters")+` WHERE key = 'poison'`).Scan(&headID))

	// Dead letters: the poison record is listed; inspect it, then requeue
	// it with the broker healed (the token is remembered) and see it
	// delivered.
	poison.Store(false)
	deadRow := fmt.Sprintf(`#dead-rows tr[data-id="%d"]`, headID)
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(url+"#dead"),
		chromedp.WaitVisible(chromedp.CSS(deadRow)),
		chromedp.Click(chromedp.CSS(`#dead-rows tr[data-id="900004"] td:nth-child(3)`)),
		chromedp.WaitVisible(chromedp.CSS(`#dead-detail pre`)),
	))
	detail, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#dead-detail`)))
	require.NoError(t, err)
	require.Contains(t, detail, `"invoice": "inv-3"`)
	require.Contains(t, detail, "0af7651916cd43dd8448eb211c80319c")
	screenshot(t, bctx, "dead-letters")
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(deadRow+` button[data-action="requeue"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-dialog`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)),
	))
	require.NoError(t, b.pub.WaitFor(30*time.Second, deliveredKey("poison", 3)))
	ds := b.pub.Deliveries()
	last := ds[len(ds)-1]
	require.Equal(t, "poison", last.Key)
	require.Equal(t, `{"key":"poison","n":0}`, last.Payload)
	require.NoError(t, recorder.CheckKeyOrder(ds[:len(ds)-1]))
	waitFor(t, 30*time.Second, "the requeued record's completion", func() (bool, error) {
		return b.count(t, "records") == 0, nil
	})

	// Record lookup: nothing of the key is left, and a dead letter is found
	// as such.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(url+"#lookup"),
		chromedp.WaitVisible(chromedp.CSS(`#lookup-q`)),
		chromedp.SetValue(chromedp.CSS(`#lookup-form select`), "key"),
		chromedp.SendKeys(chromedp.CSS(`#lookup-q`), "poison"),
		chromedp.Click(chromedp.CSS(`#lookup-form button[type=submit]`)),
	))
	waitText(t, bctx, `#lookup-state`, "State: not found")
	require.NoError(t, chromedp.Do(bctx,
		chromedp.SetValue(chromedp.CSS(`#lookup-form select`), "id"),
		chromedp.SetValue(chromedp.CSS(`#lookup-q`), "900011"),
		chromedp.Click(chromedp.CSS(`#lookup-form button[type=submit]`)),
	))
	waitText(t, bctx, `#lookup-state`, "State: dead lettered")
	screenshot(t, bctx, "lookup")
}

// waitText waits until the element's text is want.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	waitFor(t, 30*time.Second, sel+" shows "+want, func() (bool, error) {
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		return err == nil && strings.TrimSpace(got) == want, fmt.Errorf("%q (%v)", got, err)
	})
}
