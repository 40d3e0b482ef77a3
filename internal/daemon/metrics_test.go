package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/sirupsen/logrus/hooks/test"
)

// chattySamples returns the chatty_* samples of a Prometheus text
// exposition, by name with labels, but for the uptime, which moves.
func chattySamples(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "chatty_") || strings.HasPrefix(line, "chatty_uptime_seconds") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("malformed sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// get requests url with method and returns the status and body.
func get(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// metrics.listen serves the control socket's metrics on TCP, with the same
// values, and nothing else.
func TestMetricsListen(t *testing.T) {
	cfg := config.Default()
	cfg.Metrics.Listen = "127.0.0.1:0"
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	if p.d.metrics == nil {
		t.Fatal("no metrics listener with metrics.listen set")
	}
	base := "http://" + p.d.metrics.addr().String()
	waitUntil(t, "the start-up log", func() bool { return p.logged("Metrics are served on " + base + "/metrics") })

	p.dial(t)
	p.dial(t)
	for _, l := range []string{"one", "two", "three"} {
		p.src.lines <- []byte(l)
	}
	waitUntil(t, "two clients and three lines", func() bool {
		return p.d.listeners.stats().Connected == 2 && p.d.feedLines.Load() == 3
	})

	resp, body := get(t, http.MethodGet, base+"/metrics")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s, Content-Type %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	overTCP := chattySamples(t, body)
	text, err := p.ctl.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	onSocket := chattySamples(t, string(text))
	for name, want := range map[string]float64{
		"chatty_feed_lines_total":       3,
		"chatty_clients_connected":      2,
		"chatty_clients_accepted_total": 2,
	} {
		if got, ok := overTCP[name]; !ok || got != want {
			t.Errorf("over TCP %s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if len(onSocket) < 20 {
		t.Fatalf("the control socket's /metrics has only %d chatty samples", len(onSocket))
	}
	for name, v := range onSocket {
		if got, ok := overTCP[name]; !ok || got != v {
			t.Errorf("%s: %v over TCP (present %v), %v on the control socket", name, got, ok, v)
		}
	}
	for name := range overTCP {
		if _, ok := onSocket[name]; !ok {
			t.Errorf("%s is served over TCP but not on the control socket", name)
		}
	}
	if !strings.Contains(body, "\ngo_goroutines ") || !strings.Contains(body, "\nprocess_open_fds ") {
		t.Error("the Go runtime's and process's metrics are missing over TCP")
	}

	if resp, _ := get(t, http.MethodHead, base+"/metrics"); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /metrics: %s, want 200", resp.Status)
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		resp, _ := get(t, method, base+"/metrics")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /metrics: %s, Allow %q; want 405, GET, HEAD", method, resp.Status, resp.Header.Get("Allow"))
		}
	}
	// Nothing of the control API is on this port.
	for _, path := range []string{"/", "/v1/status", "/v1/stop", "/metrics/", "/nope"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			if resp, _ := get(t, method, base+path); resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s %s: %s, want 404", method, path, resp.Status)
			}
		}
	}
	if p.d.stopping() {
		t.Fatal("a request on the metrics port stopped the daemon")
	}

	// It stops with the control socket, after the listeners, and its
	// port is closed.
	order := p.stopInOrder(t)
	if i, j := slices.Index(order, "broadcast"), slices.Index(order, "metrics"); i < 0 || j < i {
		t.Errorf("parts stopped in the order %q, want metrics after broadcast", order)
	}
	if c, err := net.Dial("tcp", p.d.metrics.addr().String()); err == nil {
		c.Close()
		t.Error("the metrics port still accepts after Run returned")
	}
}

// A metrics.listen port already taken fails New, naming the field and the
// address, and leaves nothing bound.
func TestMetricsListenTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bcast := free.Addr().String()
	free.Close()

	cfg := config.Default()
	cfg.Broadcast.Listen = bcast
	cfg.Control.Socket = filepath.Join(t.TempDir(), "control.sock")
	cfg.Pool.Size = 0
	cfg.Pool.Command = []string{"/bin/true"} // never started: size 0
	cfg.Metrics.Listen = taken.Addr().String()
	logger, _ := test.NewNullLogger()
	d, err := New(Options{Config: cfg, Logger: logger, Feed: newHeldSource(false), NoSignals: true})
	if err == nil {
		d.Stop()
		d.Run(context.Background())
		t.Fatal("New succeeded on a taken metrics.listen port")
	}
	if msg := err.Error(); !strings.Contains(msg, "metrics.listen") || !strings.Contains(msg, cfg.Metrics.Listen) {
		t.Errorf("error %q does not name metrics.listen and %s", msg, cfg.Metrics.Listen)
	}
	ln, err := net.Listen("tcp", bcast)
	if err != nil {
		t.Fatalf("the broadcast listener stayed bound after New failed: %v", err)
	}
	ln.Close()
}

// Without metrics.listen there is no metrics listener.
func TestMetricsListenOff(t *testing.T) {
	p := startInProcess(t, config.Default(), nil, newHeldSource(false))
	if p.d.metrics != nil {
		t.Errorf("a metrics listener on %s without metrics.listen", p.d.metrics.addr())
	}
}
