package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
	"github.com/chromedp/chromedp"
)

// chromium returns the Chromium binary, or skips the test where there is
// none; under CI it fails instead, as .ci/run installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium (chromium, chromium-browser or google-chrome in PATH); CI must run the browser test: apt-get install chromium")
	}
	t.Skip("no Chromium in PATH (apt-get install chromium): the web page is not tested in a browser")
	return ""
}

// browser starts a headless Chromium for the test and returns its tab.
func browser(t *testing.T, bin string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox, // as root in CI
		chromedp.WindowSize(1000, 800),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	return ctx
}

// waitDOM evaluates expr in the page until ok holds for its value, and
// returns it; it fails the test after long.
func waitDOM[T any](t *testing.T, ctx context.Context, what, expr string, ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(long)
	var v T
	var err error
	for time.Now().Before(deadline) {
		if v, err = chromedp.Run(ctx, chromedp.Evaluate[T](expr)); err == nil && ok(v) {
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: last value %v, error %v", what, v, err)
	return v
}

// artifact writes a test artifact: under $CHATTY_ARTIFACTS when set, else
// in the test's artifact directory (go test -artifacts keeps it).
func artifact(t *testing.T, name string, data []byte) {
	t.Helper()
	dir := os.Getenv("CHATTY_ARTIFACTS")
	if dir == "" {
		dir = t.ArtifactDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("artifact %s", path)
}

const visibleLines = `Array.from(document.querySelectorAll("#feed li")).filter(li => !li.hidden && li.className !== "gap").map(li => li.textContent)`

// The web page, in a real browser against a chattyd: lines appear in
// order, the filter hides the others, the status panel follows chattyctl
// scale, and the page reconnects by itself when chattyd restarts.
func TestWebPageInABrowser(t *testing.T) {
	bin := chromium(t)
	wsAddr := harness.FreeAddr(t)
	cfg := fmt.Sprintf("version: 1\npool:\n  size: 1\nbroadcast:\n  websocket:\n    listen: %s\n", wsAddr)
	d := harness.StartDaemon(t, harness.Options{Config: cfg})
	if a := d.Addrs().WebSocket; a != wsAddr {
		t.Fatalf("status names the WebSocket listener %q, want %s", a, wsAddr)
	}
	ctx := browser(t, bin)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+wsAddr+"/")); err != nil {
		t.Fatal(err)
	}
	isLive := func(s string) bool { return s == "live" }
	waitDOM(t, ctx, "the page connected", `document.getElementById("state").textContent`, isLive)
	// Lines fed from now on are the page's: chattyd counts it.
	listenerRows := `Array.from(document.querySelectorAll("#status-listeners tr")).map(tr => Array.from(tr.cells).map(td => td.textContent).join(",")).join("|")`
	waitDOM(t, ctx, "the WebSocket listener's one client in the status panel", listenerRows,
		func(s string) bool { return strings.Contains(s, "broadcast-websocketwebsocket,"+wsAddr+",1") })

	var fed []string
	for i := 1; i <= 30; i++ {
		kind := "beta"
		if i%3 == 0 {
			kind = "alpha"
		}
		fed = append(fed, fmt.Sprintf("%s line %02d", kind, i))
	}
	d.Feed(fed...)
	waitDOM(t, ctx, "the fed lines in order", visibleLines, func(got []string) bool { return slices.Equal(got, fed) })

	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#filter"), "alpha")); err != nil {
		t.Fatal(err)
	}
	var alpha []string
	for _, l := range fed {
		if strings.HasPrefix(l, "alpha") {
			alpha = append(alpha, l)
		}
	}
	waitDOM(t, ctx, "only the lines matching the filter", visibleLines, func(got []string) bool { return slices.Equal(got, alpha) })
	// A line fed while filtering is filtered too.
	d.Feed("beta late", "alpha late")
	alpha = append(alpha, "alpha late")
	waitDOM(t, ctx, "a new line filtered", visibleLines, func(got []string) bool { return slices.Equal(got, alpha) })

	out, err := exec.Command(harness.BuildBinaries(t).Chattyctl, "--socket", d.ControlSocket(), "scale", "3").CombinedOutput()
	if err != nil {
		t.Fatalf("chattyctl scale 3: %v\n%s", err, out)
	}
	waitDOM(t, ctx, "the status panel's 3 workers", `document.getElementById("status-workers").textContent`,
		func(s string) bool { return s == "3 / 3" })
	waitDOM(t, ctx, "3 worker slots", `document.querySelectorAll("#status-slots tr").length`, func(n int) bool { return n == 3 })

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "webpage.png", shot)

	// chattyd restarts on the same address: the page notices, and
	// reconnects by itself.
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(long); code != 0 {
		t.Fatalf("chattyd exited with %d", code)
	}
	waitDOM(t, ctx, "the page to see the connection go", `document.getElementById("state").textContent`,
		func(s string) bool { return strings.HasPrefix(s, "reconnecting") })
	d2 := harness.StartDaemon(t, harness.Options{Config: cfg})
	waitDOM(t, ctx, "the page reconnected", `document.getElementById("state").textContent`, isLive)
	// The page resumes with the old stream's numbers: the new chattyd
	// starts it at the oldest line it holds, so a line fed before the
	// page is counted is not missed.
	d2.Feed("alpha after restart")
	alpha = append(alpha, "alpha after restart")
	waitDOM(t, ctx, "a line after the restart", visibleLines, func(got []string) bool { return slices.Equal(got, alpha) })
	if shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	}
	artifact(t, "webpage-reconnected.png", shot)
}
