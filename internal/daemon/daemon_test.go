package daemon

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/feed"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// heldSource is a feed that delivers what the test publishes and, once
// held, ignores its context until released: a feed that will not stop.
type heldSource struct {
	lines   chan []byte
	hold    bool
	release chan struct{}
}

func newHeldSource(hold bool) *heldSource {
	return &heldSource{lines: make(chan []byte), hold: hold, release: make(chan struct{})}
}

func (s *heldSource) Name() string    { return "test" }
func (s *heldSource) Dropped() uint64 { return 0 }
func (s *heldSource) Run(ctx context.Context, h feed.Handler) error {
	for {
		select {
		case l := <-s.lines:
			h.HandleLines([][]byte{l})
		case <-ctx.Done():
			if s.hold {
				<-s.release
			}
			return ctx.Err()
		}
	}
}

// inProcess is a daemon run in the test's process, with no signals taken.
type inProcess struct {
	d      *Daemon
	src    *heldSource
	hook   *test.Hook
	ctl    *client.Client
	runErr chan error
}

func startInProcess(t *testing.T, cfg config.Config, reload func() (config.Config, error), src *heldSource) *inProcess {
	t.Helper()
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	cfg.Broadcast.Listen = "127.0.0.1:0"
	cfg.Control.Socket = filepath.Join(t.TempDir(), "control.sock")
	cfg.Pool.Size = 0
	cfg.Pool.Command = []string{"/bin/true"} // never started: size 0
	d, err := New(Options{Config: cfg, Reload: reload, Logger: logger, Feed: src, NoSignals: true})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p := &inProcess{d: d, src: src, hook: hook, ctl: client.New(cfg.Control.Socket), runErr: make(chan error, 1)}
	go func() { p.runErr <- d.Run(context.Background()) }()
	t.Cleanup(func() {
		d.Stop()
		close(src.release)
		select {
		case <-p.runErr:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after Stop")
		}
	})
	waitUntil(t, "the control socket", func() bool {
		_, err := p.ctl.Status(context.Background())
		return err == nil
	})
	return p
}

// stopInOrder stops the daemon, checks that Run returns nil, and returns
// the parts of the run group in the order they stopped.
func (p *inProcess) stopInOrder(t *testing.T) []string {
	t.Helper()
	p.d.Stop()
	select {
	case err := <-p.runErr:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		p.runErr <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	var order []string
	for _, e := range p.hook.AllEntries() {
		if e.Message == "Part stopped" {
			order = append(order, e.Data["member"].(string))
		}
	}
	return order
}

// logged reports whether an entry with the message was logged.
func (p *inProcess) logged(msg string) bool {
	for _, e := range p.hook.AllEntries() {
		if strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}

// dial connects a text client and returns its reader.
func (p *inProcess) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.d.listeners.text.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// A SIGHUP reloads: a new limit applies to the next connection at once,
// and a restart-only change is named, not applied.
func TestInProcessReload(t *testing.T) {
	cfg := config.Default()
	var mu sync.Mutex
	next := cfg
	reload := func() (config.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		return next, nil
	}
	p := startInProcess(t, cfg, reload, newHeldSource(false))
	addr := p.d.listeners.text.Addr().String()

	mu.Lock()
	next = p.d.config()
	next.Broadcast.MaxClients = 1
	next.Broadcast.Listen = "127.0.0.1:1" // restart-only
	mu.Unlock()
	p.d.sigs <- syscall.SIGHUP
	waitUntil(t, "the reload", func() bool { return p.logged("Configuration reloaded") })

	if got := p.d.config().Broadcast.MaxClients; got != 1 {
		t.Fatalf("max_clients in force = %d, want 1", got)
	}
	if !p.logged("this setting changes only at restart") {
		t.Error("the restart-only change of broadcast.listen was not named")
	}
	if got := p.d.listeners.text.Addr().String(); got != addr {
		t.Errorf("the listener moved to %s on reload", got)
	}
	p.dial(t)
	waitUntil(t, "the first client", func() bool { return p.d.listeners.stats().Connected == 1 })
	_, second := p.dial(t)
	line, _ := second.ReadString('\n')
	if !strings.HasPrefix(line, "ERROR too many clients") {
		t.Errorf("second client over max_clients 1 got %q, want the refusal", line)
	}
}

// A reload whose file does not load keeps the configuration in force.
func TestInProcessReloadRejected(t *testing.T) {
	cfg := config.Default()
	p := startInProcess(t, cfg, func() (config.Config, error) { return config.Config{}, errors.New("broken file") }, newHeldSource(false))
	before := p.d.config()
	p.d.sigs <- syscall.SIGHUP
	waitUntil(t, "the rejection", func() bool { return p.logged("Reload rejected") })
	if p.d.config().Broadcast.MaxClients != before.Broadcast.MaxClients || p.logged("Configuration reloaded") {
		t.Error("a rejected reload changed the configuration")
	}
}

// The stop is ordered: the pool, then the feed, then the listeners, and
// the control socket answers until the listeners are done.
func TestInProcessShutdownOrder(t *testing.T) {
	cfg := config.Default()
	cfg.Broadcast.DrainTimeout = 0
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	conn, r := p.dial(t)
	waitUntil(t, "the client", func() bool { return p.d.listeners.stats().Connected == 1 })
	p.src.lines <- []byte("hello")
	if line, err := r.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("client read %q, %v", line, err)
	}
	conn.Close()

	order := p.stopInOrder(t)
	want := []string{"pool", "feed", "broadcast"}
	if len(order) < len(want) || !slices.Equal(order[:len(want)], want) {
		t.Fatalf("parts stopped in the order %q, want %q first", order, want)
	}
	rest := order[len(want):]
	slices.Sort(rest)
	if !slices.Equal(rest, []string{"control", "systemd"}) {
		t.Errorf("after the listeners stopped %q, want control and systemd", rest)
	}
	if !p.logged("Stopped") {
		t.Error("no Stopped line")
	}
}

// A second stop signal stops at once only when it comes forceAfter or
// more after the stop began; one that follows at once is the same stop
// sent twice (GNU timeout sends one to the child and one to its group).
func TestInProcessSecondSignal(t *testing.T) {
	cfg := config.Default()
	src := newHeldSource(true) // the feed will not stop: the stop hangs
	p := startInProcess(t, cfg, nil, src)
	p.d.forceAfter = time.Hour

	p.d.sigs <- syscall.SIGTERM
	waitUntil(t, "the stop", func() bool { return p.d.stopping() })
	p.d.sigs <- syscall.SIGTERM
	waitUntil(t, "the second signal", func() bool { return p.logged("Signal ignored: the stop began") })
	select {
	case err := <-p.runErr:
		t.Fatalf("Run returned %v on a second signal within the window", err)
	default:
	}

	// Past the window (the field, not a clock, moves: no waiting).
	p.d.stopBegan.Store(time.Now().Add(-2 * time.Second).UnixNano())
	p.d.forceAfter = forceAfter
	p.d.sigs <- syscall.SIGINT
	select {
	case err := <-p.runErr:
		if !errors.Is(err, ErrStoppedAtOnce) {
			t.Fatalf("Run = %v, want ErrStoppedAtOnce", err)
		}
		p.runErr <- err
	case <-time.After(30 * time.Second):
		t.Fatal("a second signal past the window did not stop the daemon at once")
	}
}

// log.summary_interval logs a line of counters at info level that often,
// with the feed's lines and the clients connected.
func TestInProcessSummary(t *testing.T) {
	cfg := config.Default()
	cfg.Log.SummaryInterval = 50 * time.Millisecond
	src := newHeldSource(false)
	p := startInProcess(t, cfg, nil, src)
	p.dial(t)
	waitUntil(t, "the client", func() bool { return p.d.listeners.stats().Connected == 1 })
	for range 3 {
		src.lines <- []byte("hello")
	}
	want := "Summary: 3 lines in ("
	waitUntil(t, "a summary line with the lines fed", func() bool {
		for _, e := range p.hook.AllEntries() {
			if strings.HasPrefix(e.Message, want) && e.Level == logrus.InfoLevel {
				return strings.Contains(e.Message, "1 client, workers 0/0 running, 0 restarts, 0 slow consumers, 0 mismatched acks")
			}
		}
		return false
	})
}

func TestSummaryLine(t *testing.T) {
	var prev, cur control.Status
	prev.Feed.Lines = 100
	cur.Feed.Lines = 140
	cur.Clients.Connected = 2
	cur.Clients.SlowConsumers = 1
	cur.Clients.AcksMismatched = 3
	cur.Pool.Running, cur.Pool.Desired, cur.Pool.Restarts = 3, 4, 7
	got := summaryLine(prev, cur, 5*time.Second)
	want := "Summary: 140 lines in (8.0/s), 2 clients, workers 3/4 running, 7 restarts, 1 slow consumer, 3 mismatched acks"
	if got != want {
		t.Errorf("summaryLine = %q, want %q", got, want)
	}
}
