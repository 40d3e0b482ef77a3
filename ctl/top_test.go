package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chatty-dev/chatty/pkg/control"
)

var topT0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// topStatus is a status of a daemon up since topT0.
func topStatus(lines uint64) control.Status {
	return control.Status{
		Version:   "9.9.9",
		PID:       4000,
		StartedAt: topT0,
		Listeners: []control.Listener{
			{Name: "broadcast", Addr: "127.0.0.1:54321", Protocol: "tcp"},
			{Name: "broadcast-signed", Addr: "127.0.0.1:54322", Protocol: "signed"},
		},
		Feed: control.FeedStatus{Source: "stdin", State: control.FeedReading, Lines: lines, Bytes: lines * 100},
		Pool: control.PoolStatus{Desired: 2, Running: 2, Slots: []control.Worker{
			{Slot: 1, PID: 4101, State: "running", UptimeSeconds: 70},
			{Slot: 2, PID: 4102, State: "running", UptimeSeconds: 70},
		}},
	}
}

// topTwoSamples is a model after two samples 2 s apart: 100 lines fed,
// slot 2 restarted, two connections refused, a slow consumer closed, a
// mismatched ack, a client come and one gone.
func topTwoSamples() *topModel {
	m := &topModel{socket: "/run/chattyd/control.sock"}
	s1 := topStatus(1400)
	s1.Clients = control.ClientsSummary{Connected: 2, Accepted: 5}
	m.update(topSample{at: topT0.Add(time.Minute), status: s1, clients: []control.Client{
		{ID: 1, Remote: "127.0.0.1:40001", ConnectedAt: topT0},
		{ID: 2, Remote: "127.0.0.1:40002", ConnectedAt: topT0},
	}})
	s2 := topStatus(1500)
	s2.Clients = control.ClientsSummary{Connected: 2, Accepted: 6, Refused: 2, SlowConsumers: 1, AcksGood: 1400, AcksMismatched: 1}
	s2.Pool.Restarts = 1
	s2.Pool.Slots[1] = control.Worker{Slot: 2, PID: 4103, State: "running", UptimeSeconds: 1, Restarts: 1, LastExit: "exited with code 2"}
	m.update(topSample{at: topT0.Add(time.Minute + 2*time.Second), status: s2, clients: []control.Client{
		{ID: 1, Remote: "127.0.0.1:40001", Listener: "broadcast", ConnectedAt: topT0, LinesSent: 1500, AckLag: 3},
		{ID: 3, Remote: "[::1]:40003", Listener: "broadcast-signed", ConnectedAt: topT0.Add(time.Minute), QueueLines: 77, AckLag: 9, Key: "SHA256:abc"},
	}})
	return m
}

// checkFits fails unless every line is shorter than width columns and
// there are at most height lines.
func checkFits(t *testing.T, lines []string, width, height int) {
	t.Helper()
	if len(lines) > height {
		t.Errorf("%d lines for a height of %d", len(lines), height)
	}
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n >= width {
			t.Errorf("line %d has %d columns for a width of %d: %q", i+1, n, width, l)
		}
	}
}

func TestTopFrame(t *testing.T) {
	m := topTwoSamples()
	now := topT0.Add(time.Minute + 2*time.Second)
	lines := m.frame(now, 120, 40)
	checkFits(t, lines, 120, 40)
	screen := strings.Join(lines, "\n")
	for _, want := range []string{
		"chattyd 9.9.9  pid 4000  up ",
		"lines 1500  rate 50.0/s",
		"2 connected  accepted 6  refused 2  slow 1",
		"acks 1400 good 1 mismatched",
		"listen   broadcast tcp 127.0.0.1:54321  clients 1  most queued 0  most ack lag 3\n",
		"listen   broadcast-signed signed 127.0.0.1:54322  clients 1  most queued 77  most ack lag 9\n",
		"pool     2 of 2 running  restarts 1",
		"peak 50.0/s",
		// the client most behind first
		"3      [::1]:40003              broadcast-signed       2s      77       0 B       9         0     0  SHA256:abc",
		"SHA256:abc",
		"2     4103     running",
		"slot 2 restarted (exited with code 2)",
		"2 connection(s) refused over max_clients",
		"1 slow consumer(s) disconnected",
		"1 mismatched ack(s)",
		"client 3 connected from [::1]:40003",
		"client 2 disconnected",
	} {
		if !strings.Contains(screen, want) {
			t.Errorf("the frame lacks %q:\n%s", want, screen)
		}
	}
	if i, j := strings.Index(screen, "[::1]:40003 "), strings.Index(screen, "127.0.0.1:40001 "); i < 0 || j < 0 || i > j {
		t.Errorf("the client with lines queued is not listed first:\n%s", screen)
	}
	for _, w := range []int{20, 40, 80, 200} {
		checkFits(t, m.frame(now, w, 40), w, 40)
	}
}

// A short terminal shows every list cut, with what it leaves out.
func TestTopFrameHeight(t *testing.T) {
	m := topTwoSamples()
	s := m.last.status
	for i := 3; i <= 20; i++ {
		s.Pool.Slots = append(s.Pool.Slots, control.Worker{Slot: i, PID: 4100 + i, State: "running"})
	}
	var cs []control.Client
	for i := 1; i <= 30; i++ {
		cs = append(cs, control.Client{ID: uint64(i), Remote: fmt.Sprintf("127.0.0.1:%d", 50000+i)})
	}
	m.update(topSample{at: m.last.at.Add(time.Second), status: s, clients: cs})
	for _, h := range []int{5, 12, 24, 30} {
		lines := m.frame(m.last.at, 100, h)
		checkFits(t, lines, 100, h)
		if h >= 24 {
			screen := strings.Join(lines, "\n")
			for _, want := range []string{"CLIENT", "SLOT", "EVENTS", "more"} {
				if !strings.Contains(screen, want) {
					t.Errorf("height %d: the frame lacks %q:\n%s", h, want, screen)
				}
			}
		}
	}
}

func TestSparkline(t *testing.T) {
	for _, tc := range []struct {
		values []float64
		width  int
		want   string
	}{
		{nil, 10, ""},
		{[]float64{0, 0, 0}, 10, "▁▁▁"},
		{[]float64{0, 5, 10}, 10, "▁▅█"},
		{[]float64{0, 1, 2, 3, 4, 5, 6, 7}, 10, "▁▂▃▄▅▆▇█"},
		{[]float64{100, 0, 1, 2}, 3, "▁▅█"}, // the last 3 only, scaled to them
		{[]float64{1, 2}, 0, ""},
	} {
		if got := sparkline(tc.values, tc.width); got != tc.want {
			t.Errorf("sparkline(%v, %d) = %q, want %q", tc.values, tc.width, got, tc.want)
		}
	}
}

// Text from the feed and from clients cannot reach the terminal raw.
func TestTopEscapes(t *testing.T) {
	m := &topModel{socket: "/tmp/s\x1b[2J.sock"}
	s := topStatus(1)
	s.Feed.Source = "/tmp/feed\x1b]0;title\x07"
	s.Pool.Slots[0].LastExit = "exited\r\nEVIL"
	m.update(topSample{at: topT0, status: s})
	m.update(topSample{at: topT0.Add(time.Second), status: s, clients: []control.Client{
		{ID: 9, Remote: "1.2.3.4:5\x1b[31m\x9b1m", Key: "k\u009b2J\u202e", Listener: "l\x1b[H"},
	}})
	lines := m.frame(topT0.Add(time.Second), 200, 40)
	lines = append(lines, m.plainLine(topT0))
	screen := strings.Join(lines, "\n")
	for _, l := range lines {
		for _, r := range l {
			if unicode.IsControl(r) || r == utf8.RuneError || (r >= 0x80 && !strings.ContainsRune(string(sparkBars), r)) {
				t.Errorf("raw %U in %q", r, l)
			}
		}
	}
	for _, want := range []string{`/tmp/s\x1b[2J.sock`, `/tmp/feed\x1b]0;title\a`, `exited\r\nEVIL`,
		`1.2.3.4:5\x1b[31m\x9b1m`, `k\u009b2J\u202e`, `l\x1b[H`, `client 9 connected from 1.2.3.4:5\x1b[31m`} {
		if !strings.Contains(screen, want) {
			t.Errorf("the frame lacks %q:\n%s", want, screen)
		}
	}
}

func TestDrawFrame(t *testing.T) {
	var b bytes.Buffer
	drawFrame(&b, []string{"one", "two"})
	if got, want := b.String(), "\x1b[H"+"one\x1b[K\r\n"+"two\x1b[K"+"\x1b[J"; got != want {
		t.Errorf("drawFrame = %q, want %q", got, want)
	}
}

func TestShare(t *testing.T) {
	for _, tc := range []struct {
		room int
		need []int
		want []int
	}{
		{30, []int{5, 5, 5}, []int{5, 5, 5}},
		{9, []int{30, 2, 30}, []int{4, 2, 3}},
		{0, []int{3, 3}, []int{0, 0}},
		{-4, []int{3}, []int{0}},
	} {
		if got := share(tc.room, tc.need...); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("share(%d, %v) = %v, want %v", tc.room, tc.need, got, tc.want)
		}
	}
}

// Without a terminal, top prints one line per interval.
func TestTopPlain(t *testing.T) {
	_, sock := fakeDaemon(t)
	code, out, errOut := runCtl(t, "--socket", sock, "top", "--once", "--interval", "100ms")
	if code != 0 {
		t.Fatalf("top --once: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{" lines=42 rate=0.0 clients=3 max_ack_lag=0 refused=0 slow=0 mismatched=0 workers=1/4 restarts=0 feed=reading\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("top --once printed %q, want %q in it", out, want)
		}
	}
	if n := strings.Count(out, "\n"); n != 1 {
		t.Errorf("top --once printed %d lines, want 1:\n%s", n, out)
	}
}

func TestTopRefuses(t *testing.T) {
	_, sock := fakeDaemon(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"interval too short", []string{"--socket", sock, "top", "--interval", "10ms"}, 2, "top: --interval must be at least 100ms, got 10ms"},
		{"argument", []string{"--socket", sock, "top", "now"}, 2, `top: unexpected argument "now"`},
		{"no daemon", []string{"--socket", filepath.Join(t.TempDir(), "none.sock"), "top"}, 1, "none.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCtl(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.err) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tc.code, tc.err)
			}
			if out != "" {
				t.Errorf("printed %q", out)
			}
		})
	}
}

// Without a terminal, each event is printed once, on a line of its own
// before the line of the sample that showed it.
func TestTopPlainEvents(t *testing.T) {
	var out strings.Builder
	r := &topRun{model: *topTwoSamples(), out: &out}
	if err := r.printPlain(); err != nil {
		t.Fatal(err)
	}
	if err := r.printPlain(); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{
		"event: slot 2 restarted (exited with code 2)",
		"event: 2 connection(s) refused over max_clients",
		"event: 1 slow consumer(s) disconnected",
		"event: 1 mismatched ack(s)",
		"event: client 3 connected from [::1]:40003",
		"event: client 2 disconnected",
		" lines=1500 rate=50.0 clients=2 max_ack_lag=9 refused=2 slow=1 mismatched=1 workers=2/2 restarts=1 feed=reading",
		" lines=1500 rate=50.0 clients=2 max_ack_lag=9 refused=2 slow=1 mismatched=1 workers=2/2 restarts=1 feed=reading",
	}
	if len(got) != len(want) {
		t.Fatalf("printed %d lines, want %d:\n%s", len(got), len(want), out.String())
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("line %d is %q, want %q in it", i+1, got[i], want[i])
		}
	}
}
