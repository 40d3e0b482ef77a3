package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// The control tests drive chattyd's control socket with the real
// chattyctl, curl and a plain HTTP client, and check what docs/control.md
// promises. They decode the JSON into structs of their own, spelt as the
// documentation spells the fields, so that a renamed field fails here.

// wireStatus is the documented Status, as far as the tests read it.
type wireStatus struct {
	Version   string `json:"version"`
	Listeners []struct {
		Name     string `json:"name"`
		Addr     string `json:"addr"`
		Protocol string `json:"protocol"`
	} `json:"listeners"`
	Feed struct {
		Source      string `json:"source"`
		State       string `json:"state"`
		Lines       uint64 `json:"lines"`
		Bytes       uint64 `json:"bytes"`
		Dropped     uint64 `json:"dropped"`
		Undelivered uint64 `json:"undelivered"`
	} `json:"feed"`
	Clients struct {
		Connected      int    `json:"connected"`
		Accepted       uint64 `json:"accepted"`
		Refused        uint64 `json:"refused"`
		SlowConsumers  uint64 `json:"slow_consumers"`
		IdleClosed     uint64 `json:"idle_closed"`
		AcksGood       uint64 `json:"acks_good"`
		AcksMismatched uint64 `json:"acks_mismatched"`
		KeepAlives     uint64 `json:"keep_alives"`
		UnknownLines   uint64 `json:"unknown_lines"`
	} `json:"clients"`
	Pool struct {
		Desired  int          `json:"desired"`
		Running  int          `json:"running"`
		Restarts uint64       `json:"restarts"`
		Slots    []wireWorker `json:"slots"`
	} `json:"pool"`
}

// wireWorker is the documented Worker.
type wireWorker struct {
	Slot  int    `json:"slot"`
	PID   int    `json:"pid"`
	State string `json:"state"`
}

// wireClient is the documented Client.
type wireClient struct {
	ID             uint64 `json:"id"`
	Remote         string `json:"remote"`
	LinesSent      uint64 `json:"lines_sent"`
	AcksGood       uint64 `json:"acks_good"`
	AcksMismatched uint64 `json:"acks_mismatched"`
	UnknownLines   uint64 `json:"unknown_lines"`
	KeepAlives     uint64 `json:"keep_alives"`
}

// sleepers is a configuration with n workers that run sleep: they never
// connect, so they do not count as clients.
func sleepers(n int) string {
	return poolConfig(n, "  command: [\"sleep\", \"1000\"]\n  stop_timeout: 1s\n")
}

// ctlResult is the outcome of one chattyctl run.
type ctlResult struct {
	code           int
	stdout, stderr string
}

func (r ctlResult) String() string {
	return fmt.Sprintf("exit status %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// ctl runs the real chattyctl with --socket sock (unless sock is empty)
// and args, as the test's user.
func ctl(t *testing.T, sock string, args ...string) ctlResult {
	t.Helper()
	return ctlAs(t, nil, harness.BuildBinaries(t).Chattyctl, sock, args...)
}

// ctlAs runs chattyctl binary bin with the credential cred (nil: the
// test's own).
func ctlAs(t *testing.T, cred *syscall.Credential, bin, sock string, args ...string) ctlResult {
	t.Helper()
	if bin == "" {
		t.Fatal("chattyctl was not built")
	}
	if sock != "" {
		args = append([]string{"--socket", sock}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), long)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "CHATTY_SOCKET=")
	cmd.Dir = "/"
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run chattyctl %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("chattyctl %s still running after %s", strings.Join(args, " "), long)
	}
	return ctlResult{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// ctlOK runs chattyctl and fails the test unless it exits 0.
func ctlOK(t *testing.T, sock string, args ...string) string {
	t.Helper()
	r := ctl(t, sock, args...)
	if r.code != 0 {
		t.Fatalf("chattyctl %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// ctlJSON runs chattyctl with args and --json and decodes its output.
func ctlJSON(t *testing.T, sock string, v any, args ...string) {
	t.Helper()
	out := ctlOK(t, sock, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("chattyctl %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func ctlStatus(t *testing.T, sock string) wireStatus {
	t.Helper()
	var st wireStatus
	ctlJSON(t, sock, &st, "status")
	return st
}

// waitStatus polls chattyctl status --json until ok accepts it.
func waitStatus(t *testing.T, sock string, what string, ok func(wireStatus) bool) wireStatus {
	t.Helper()
	deadline := time.Now().Add(short)
	for {
		st := ctlStatus(t, sock)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the status still does not show %s: %+v", short, what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// unixHTTP returns an HTTP client whose every request goes to sock.
func unixHTTP(sock string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			DisableKeepAlives: true,
		},
		Timeout: short,
	}
}

// httpDo sends one request over sock and returns the answer, its body read.
func httpDo(t *testing.T, sock, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://chattyd"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := unixHTTP(sock).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", method, path, err)
	}
	return resp, b
}

// admitted dials n raw clients and waits until chattyd has admitted each.
func admitted(t *testing.T, d *harness.Daemon, n int) []*harness.Client {
	t.Helper()
	cs := make([]*harness.Client, n)
	for i := range cs {
		cs[i] = harness.Dial(t, d.Addr())
		cs[i].KeepAlive(short)
	}
	return cs
}

// The status counts what happened: clients, feed lines and bytes, good and
// mismatched acks, workers; in JSON, for people, and as metrics.
func TestCtlStatusCounts(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: sleepers(2)})
	sock := d.ControlSocket()
	cs := admitted(t, d, 3)

	lines := variedLines("status", 5)
	var bytes uint64
	for _, l := range lines {
		bytes += uint64(len(l)) + 1
	}
	d.Feed(lines...)
	for i, c := range cs {
		got := c.ReadLines(len(lines), short)
		if diff := diffLines(got, lines); diff != "" {
			t.Fatalf("client %d: %s", i+1, diff)
		}
		for j, l := range got {
			n := len(l)
			if i == 2 && j == len(got)-1 {
				n++ // the third client gets its last ack wrong
			}
			c.Send(fmt.Sprintf("ACK_RECEIVED %d", n))
		}
	}
	good, bad := uint64(3*len(lines)-1), uint64(1)
	cs[1].Send("hello?")
	cs[1].Send("ACK_RECEIVED two")
	cs[1].KeepAlive(short) // both read before its answer

	st := waitStatus(t, sock, "every ack and both workers", func(st wireStatus) bool {
		return st.Clients.AcksGood+st.Clients.AcksMismatched == good+bad && st.Pool.Running == 2
	})
	if st.Clients.UnknownLines != 2 {
		t.Errorf("unknown_lines = %d, want 2", st.Clients.UnknownLines)
	}
	if st.Clients.Connected != 3 || st.Clients.Accepted != 3 || st.Clients.Refused != 0 {
		t.Errorf("clients = %+v; want 3 connected, 3 accepted, none refused", st.Clients)
	}
	if st.Clients.AcksGood != good || st.Clients.AcksMismatched != bad {
		t.Errorf("acks: %d good, %d mismatched; want %d and %d", st.Clients.AcksGood, st.Clients.AcksMismatched, good, bad)
	}
	if st.Feed.Lines != uint64(len(lines)) || st.Feed.Bytes != bytes || st.Feed.Source != "stdin" ||
		st.Feed.State != "reading" || st.Feed.Undelivered != 0 || st.Feed.Dropped != 0 {
		t.Errorf("feed = %+v; want stdin reading, %d lines, %d bytes, none dropped or undelivered", st.Feed, len(lines), bytes)
	}
	if st.Pool.Desired != 2 || st.Pool.Running != 2 || len(st.Pool.Slots) != 2 {
		t.Errorf("pool = %+v; want 2 desired, 2 running, 2 slots", st.Pool)
	}
	if len(st.Listeners) != 1 || st.Listeners[0].Addr != d.Addr() || st.Listeners[0].Protocol != "tcp" {
		t.Errorf("listeners = %+v; want one, tcp %s", st.Listeners, d.Addr())
	}
	if st.Version == "" {
		t.Error("no version in the status")
	}

	t.Run("human", func(t *testing.T) {
		out := ctlOK(t, sock, "status")
		for _, want := range []string{
			"listener  broadcast",
			"tcp " + d.Addr(),
			fmt.Sprintf("reading; %d lines, %d bytes, 0 dropped as too long, 0 undelivered", len(lines), bytes),
			"3 connected",
			"3 accepted, 0 refused",
			fmt.Sprintf("acks %d good, %d mismatched", good, bad),
			"; 2 unknown client lines",
			"2 of 2 running",
			"SLOT  PID",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("clients", func(t *testing.T) {
		var clients []wireClient
		ctlJSON(t, sock, &clients, "clients")
		if len(clients) != 3 {
			t.Fatalf("%d clients, want 3: %+v", len(clients), clients)
		}
		var acks, unknown []uint64
		for _, c := range clients {
			if c.LinesSent != uint64(len(lines)) || !strings.HasPrefix(c.Remote, "127.0.0.1:") {
				t.Errorf("client %+v; want %d lines sent, from 127.0.0.1", c, len(lines))
			}
			acks = append(acks, c.AcksMismatched)
			unknown = append(unknown, c.UnknownLines)
		}
		slices.Sort(acks)
		if !slices.Equal(acks, []uint64{0, 0, 1}) {
			t.Errorf("mismatched acks by client %v; want one client with 1", acks)
		}
		slices.Sort(unknown)
		if !slices.Equal(unknown, []uint64{0, 0, 2}) {
			t.Errorf("unknown lines by client %v; want one client with 2", unknown)
		}
	})

	t.Run("workers", func(t *testing.T) {
		var ws []wireWorker
		ctlJSON(t, sock, &ws, "workers")
		procs := d.Workers(t)
		got := make(map[int]int)
		for _, w := range ws {
			got[w.Slot] = w.PID
		}
		if !maps.Equal(got, procs) {
			t.Errorf("workers --json by slot %v; chattyd's children by slot %v", got, procs)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, body := httpDo(t, sock, http.MethodGet, "/metrics", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
		}
		m := parseMetrics(string(body))
		st := ctlStatus(t, sock)
		for name, want := range map[string]uint64{
			"chatty_feed_lines_total":              st.Feed.Lines,
			"chatty_feed_bytes_total":              st.Feed.Bytes,
			"chatty_feed_dropped_lines_total":      st.Feed.Dropped,
			"chatty_feed_undelivered_lines_total":  st.Feed.Undelivered,
			"chatty_clients_connected":             uint64(st.Clients.Connected),
			"chatty_clients_accepted_total":        st.Clients.Accepted,
			"chatty_clients_refused_total":         st.Clients.Refused,
			"chatty_clients_slow_consumers_total":  st.Clients.SlowConsumers,
			"chatty_clients_idle_closed_total":     st.Clients.IdleClosed,
			"chatty_acks_good_total":               st.Clients.AcksGood,
			"chatty_acks_mismatched_total":         st.Clients.AcksMismatched,
			"chatty_keepalives_answered_total":     st.Clients.KeepAlives,
			"chatty_clients_rejected_frames_total": 0,
			"chatty_clients_unknown_lines_total":   st.Clients.UnknownLines,
			"chatty_pool_workers_desired":          uint64(st.Pool.Desired),
			"chatty_pool_workers_running":          uint64(st.Pool.Running),
			"chatty_pool_restarts_total":           st.Pool.Restarts,
		} {
			got, ok := m[name]
			if !ok {
				t.Errorf("/metrics lacks %s", name)
				continue
			}
			if got != strconv.FormatUint(want, 10) {
				t.Errorf("%s = %s; the status says %d", name, got, want)
			}
		}
		if info := `chatty_build_info{version="` + st.Version + `"}`; m[info] != "1" {
			t.Errorf("%s = %q; want 1", info, m[info])
		}
		if _, ok := m["chatty_uptime_seconds"]; !ok {
			t.Error("/metrics lacks chatty_uptime_seconds")
		}
		if !strings.Contains(string(body), "\ngo_goroutines ") || !strings.Contains(string(body), "\nprocess_open_fds ") {
			t.Error("/metrics lacks the Go runtime's or the process's metrics")
		}
	})

	t.Run("version", func(t *testing.T) {
		out := ctlOK(t, sock, "version")
		if want := fmt.Sprintf("chattyd %s at %s\n", st.Version, sock); !strings.HasPrefix(out, "chattyctl ") || !strings.Contains(out, want) {
			t.Errorf("version printed %q; want chattyctl's and %q", out, want)
		}
	})
}

// parseMetrics returns the samples of a Prometheus text exposition by
// name with labels.
func parseMetrics(text string) map[string]string {
	m := make(map[string]string)
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		m[line[:i]] = strings.TrimSpace(line[i+1:])
	}
	return m
}

var warningLineRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z \[Warning\] disk almost full$`)

// chattyctl send broadcasts one typed line to every client, in order with
// the feed, and refuses what cannot be one line.
func TestCtlSend(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})
	sock := d.ControlSocket()

	// Sent to nobody: counted as undelivered, not as a feed line.
	ctlOK(t, sock, "send", "info", "nobody listens")
	if st := ctlStatus(t, sock); st.Feed.Undelivered != 1 || st.Feed.Lines != 0 || st.Feed.Bytes != 0 {
		t.Errorf("after a message to no client: feed %+v; want 1 undelivered, no line", st.Feed)
	}

	cs := admitted(t, d, 3)
	d.Feed("fed first")
	for _, c := range cs {
		if got := c.ReadLine(short); got != "fed first" {
			t.Fatalf("client got %q, want the fed line", got)
		}
	}

	// The message as separate words, then as one argument in lower case.
	for _, args := range [][]string{
		{"send", "Warning", "disk", "almost", "full"},
		{"send", "warning", "disk almost full"},
	} {
		mark := d.LogLen()
		out := strings.TrimSuffix(ctlOK(t, sock, args...), "\n")
		if !warningLineRE.MatchString(out) {
			t.Errorf("chattyctl %s printed %q; want the line sent", strings.Join(args, " "), out)
		}
		for i, c := range cs {
			if got := c.ReadLine(short); got != out {
				t.Errorf("client %d got %q; want %q", i+1, got, out)
			}
		}
		d.WaitLogSince(t, mark, "[WARNING] Message sent: disk almost full", short)
	}

	// A message is not a feed line: the feed counts one line, each client
	// was sent three.
	st := ctlStatus(t, sock)
	if st.Feed.Lines != 1 {
		t.Errorf("feed.lines = %d after one fed line and two messages; want 1", st.Feed.Lines)
	}
	var clients []wireClient
	ctlJSON(t, sock, &clients, "clients")
	for _, c := range clients {
		if c.LinesSent != 3 {
			t.Errorf("client %d: lines_sent = %d; want 3 (one fed, two sent)", c.ID, c.LinesSent)
		}
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown type", []string{"send", "loud", "x"}, 2,
			`send: unknown message type "loud": want one of Request, Response, Critical, Info, Warning, Debug, Error`},
		{"line break", []string{"send", "info", "two\nlines"}, 2, "line break"},
		{"carriage return", []string{"send", "info", "two\rlines"}, 2, "line break"},
		{"control character", []string{"send", "info", "\x1b]0;title\x07"}, 2, "control character U+001B at byte 0"},
		{"empty", []string{"send", "info", ""}, 2, "the text is empty"},
		{"too long", []string{"send", "info", strings.Repeat("x", 4097)}, 2, "more than the limit of 4096"},
		{"no message", []string{"send", "info"}, 2, "want a type and a message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ctl(t, sock, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("chattyctl send: %s\nwant exit status %d and %q", r, tc.code, tc.want)
			}
		})
	}
	// Nothing refused was broadcast: the next line each client reads is
	// the one fed now, since messages and feed lines share one order.
	d.Feed("fed last")
	for i, c := range cs {
		if got := c.ReadLine(short); got != "fed last" {
			t.Errorf("client %d got %q; want the fed line, nothing refused before it", i+1, got)
		}
	}
}

// chattyctl scale changes the running workers to exactly the number asked,
// and refuses numbers out of range without changing anything.
func TestCtlScale(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: sleepers(2)})
	sock := d.ControlSocket()
	d.WaitWorkers(t, 2, short)

	old := 2
	for _, n := range []int{5, 0, 8} {
		mark := d.LogLen()
		out := ctlOK(t, sock, "scale", strconv.Itoa(n))
		if want := fmt.Sprintf("workers: %d -> %d\n", old, n); out != want {
			t.Errorf("scale %d printed %q; want %q", n, out, want)
		}
		// The control server logs after the pool: once its line is in,
		// so is every line of the scaling.
		end := d.WaitLogSince(t, mark, "[control] pool scaled", short)
		if got := strings.Count(d.Log()[mark:end], "Scaling the worker pool"); got != 1 {
			t.Errorf("scale %d: chattyd logged the scaling %d times, want once:\n%s", n, got, d.Log()[mark:end])
		}
		old = n
		procs := d.WaitWorkers(t, n, short)
		st := waitStatus(t, sock, fmt.Sprintf("%d workers running", n), func(st wireStatus) bool {
			return st.Pool.Running == n && len(st.Pool.Slots) == n
		})
		if st.Pool.Desired != n {
			t.Errorf("after scale %d: pool.desired = %d", n, st.Pool.Desired)
		}
		var ws []wireWorker
		ctlJSON(t, sock, &ws, "workers")
		got := make(map[int]int)
		for _, w := range ws {
			got[w.Slot] = w.PID
		}
		if !maps.Equal(got, procs) {
			t.Errorf("after scale %d: workers --json by slot %v; chattyd's children %v", n, got, procs)
		}
	}

	before := d.Workers(t)
	mark := d.LogLen()
	for _, arg := range []string{"-1", "abc", "100000", "1.5", ""} {
		r := ctl(t, sock, "scale", arg)
		if r.code != 2 || !strings.Contains(r.stderr, "scale: want a whole number from 0 to 10000") {
			t.Errorf("scale %q: %s\nwant exit status 2 and the range", arg, r)
		}
	}
	if st := ctlStatus(t, sock); st.Pool.Desired != 8 || st.Pool.Running != 8 {
		t.Errorf("after refused scales: pool %d desired, %d running; want 8", st.Pool.Desired, st.Pool.Running)
	}
	if after := d.Workers(t); !maps.Equal(before, after) {
		t.Errorf("refused scales changed the workers from %v to %v", before, after)
	}
	if strings.Contains(d.Log()[mark:], "pool scaled") {
		t.Errorf("a refused scale reached chattyd:\n%s", d.Log()[mark:])
	}
}

// chattyctl stop returns once chattyd is gone; chattyd exits 0, leaving no
// process and no socket behind.
func TestCtlStop(t *testing.T) {
	t.Parallel()
	t.Run("wait", func(t *testing.T) {
		t.Parallel()
		d := harness.StartDaemon(t, harness.Options{Config: sleepers(2)})
		sock := d.ControlSocket()
		d.WaitWorkers(t, 2, short)
		r := ctl(t, sock, "stop")
		if r.code != 0 || r.stdout != "chattyd stopped\n" {
			t.Fatalf("stop: %s", r)
		}
		// chattyctl waits until the socket stops answering, which chattyd
		// removes last: its workers are gone by then.
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the socket is still there when stop returns: %v", err)
		}
		if left := aliveIn(t, d.PID()); len(left) > 0 {
			t.Errorf("processes besides chattyd still run when stop returns: %v", left)
		}
		if code := d.Wait(short); code != 0 {
			t.Errorf("chattyd exit status %d, want 0", code)
		}
		poll.Eventually(t, short, func() bool { return len(harness.Group(t, d.PID())) == 0 },
			"processes of chattyd's group are left")
		d.WaitLog(t, "[control] stop requested", short)
	})
	t.Run("no-wait", func(t *testing.T) {
		t.Parallel()
		d := harness.StartDaemon(t, harness.Options{Config: sleepers(1)})
		sock := d.ControlSocket()
		r := ctl(t, sock, "stop", "--no-wait")
		if r.code != 0 || r.stdout != "chattyd is stopping\n" {
			t.Fatalf("stop --no-wait: %s", r)
		}
		if code := d.Wait(short); code != 0 {
			t.Errorf("chattyd exit status %d, want 0", code)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the socket is still there after chattyd exited: %v", err)
		}
		poll.Eventually(t, short, func() bool { return len(harness.Group(t, d.PID())) == 0 },
			"processes of chattyd's group are left")
	})
}

// aliveIn returns the processes of group pgid, other than pgid itself,
// that have not exited.
func aliveIn(t *testing.T, pgid int) []int {
	t.Helper()
	var out []int
	for _, p := range harness.Group(t, pgid) {
		if p.PID != pgid && !p.Zombie() {
			out = append(out, p.PID)
		}
	}
	return out
}

// A second chattyd on the same control socket refuses to start and leaves
// the first alone.
func TestCtlSecondDaemonRefused(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})
	sock := d.ControlSocket()
	r := harness.Run(t, long, "--workers", "0", "--listen", "127.0.0.1:0", "--control-socket", sock)
	if r.Code != 1 {
		t.Errorf("second chattyd: exit status %d, want 1", r.Code)
	}
	if want := "control socket in use: another chattyd holds " + sock; !strings.Contains(r.Stderr, want) {
		t.Errorf("second chattyd's stderr lacks %q:\n%s", want, r.Stderr)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("the first chattyd's socket: %v, %v", fi, err)
	}
	c := admitted(t, d, 1)[0]
	if st := ctlStatus(t, sock); st.Clients.Connected != 1 {
		t.Errorf("the first chattyd counts %d clients, want 1", st.Clients.Connected)
	}
	d.Feed("still here")
	if got := c.ReadLine(short); got != "still here" {
		t.Errorf("the first chattyd's client got %q", got)
	}
}

// A socket file nobody answers on, left by a crash, is replaced.
func TestCtlStaleSocketReplaced(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(harness.SocketDir(t), "control.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("the stale socket: %v, %v", fi, err)
	}
	if r := ctl(t, sock, "status"); r.code != 1 || !strings.Contains(r.stderr, "connection refused (a stale socket); is chattyd running?") {
		t.Errorf("status on a stale socket: %s", r)
	}

	d := harness.StartDaemon(t, harness.Options{ControlSocket: sock})
	if st := ctlStatus(t, sock); len(st.Listeners) != 1 || st.Listeners[0].Addr != d.Addr() {
		t.Errorf("status of the new chattyd: %+v", st)
	}
}

// Anything at the socket path that is not a socket stays, and chattyd
// refuses to start, naming it.
func TestCtlSocketPathTaken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		make func(t *testing.T, path string)
		kind string
	}{
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("precious\n"), 0o640); err != nil {
				t.Fatal(err)
			}
		}, "a regular file"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o750); err != nil {
				t.Fatal(err)
			}
		}, "a directory"},
		{"symbolic link to a stale socket", func(t *testing.T, path string) {
			target := path + ".real"
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: target, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close()
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, "a symbolic link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sock := filepath.Join(harness.SocketDir(t), "control.sock")
			tc.make(t, sock)
			before := fileState(t, sock)
			r := harness.Run(t, long, "--workers", "0", "--listen", "127.0.0.1:0", "--control-socket", sock)
			if r.Code != 1 {
				t.Errorf("exit status %d, want 1", r.Code)
			}
			if want := fmt.Sprintf("control socket %s exists and is not a socket but %s; not removing it", sock, tc.kind); !strings.Contains(r.Stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
			}
			if after := fileState(t, sock); after != before {
				t.Errorf("the file at the socket path changed: %s, was %s", after, before)
			}
		})
	}
}

// fileState describes the file at path without following a link: kind,
// mode, size, modification time and content or link target.
func fileState(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	s := fmt.Sprintf("%v %d %v", fi.Mode(), fi.Size(), fi.ModTime())
	switch fi.Mode().Type() {
	case 0:
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s += fmt.Sprintf(" %q", b)
	case os.ModeSymlink:
		target, err := os.Readlink(path)
		if err != nil {
			t.Fatal(err)
		}
		s += " -> " + target
	}
	return s
}

// nobody is the user the permission tests run chattyctl as.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// chattyctlForAll returns a copy of chattyctl that every user may run: the
// built one is in a directory only the test's user can enter.
func chattyctlForAll(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "chattyctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(harness.BuildBinaries(t).Chattyctl)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "chattyctl")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// openSocketDir returns a socket directory every user may enter, as chattyd
// accepts one: owned by root, writable by root alone.
func openSocketDir(t *testing.T) string {
	t.Helper()
	dir := harness.SocketDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Another user may read but not change; the file mode shuts out those who
// may not even read, and control.group lets its members change things.
func TestCtlOtherUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run chattyctl as another user (uid 65534)")
	}
	bin := chattyctlForAll(t)

	t.Run("read only", func(t *testing.T) {
		t.Parallel()
		sock := filepath.Join(openSocketDir(t), "control.sock")
		d := harness.StartDaemon(t, harness.Options{Config: sleepers(2), ControlSocket: sock})
		before := d.WaitWorkers(t, 2, short)

		// Mode 0660, owner and group root: nobody cannot connect at all.
		r := ctlAs(t, nobody, bin, sock, "status")
		if want := "permission denied on " + sock + " (owner root, group root, mode 0660)"; r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("status as uid 65534 on a 0660 root socket: %s\nwant exit status 1 and %q", r, want)
		}

		// Open the socket to all: the peer's credentials still decide.
		if err := os.Chmod(sock, 0o666); err != nil {
			t.Fatal(err)
		}
		r = ctlAs(t, nobody, bin, sock, "status", "--json")
		var st wireStatus
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.Pool.Desired != 2 {
			t.Errorf("status as uid 65534: %s", r)
		}
		for _, args := range [][]string{{"scale", "3"}, {"send", "info", "hi"}, {"stop"}} {
			mark := d.LogLen()
			r := ctlAs(t, nobody, bin, sock, args...)
			if want := "permission denied: uid 65534 may only read"; r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "403") {
				t.Errorf("%s as uid 65534: %s\nwant exit status 1, 403 and %q", args[0], r, want)
			}
			d.WaitLogSince(t, mark, "[WARNING] [control] refused POST /v1/"+args[0]+" from uid 65534 (pid ", short)
		}
		if st := ctlStatus(t, sock); st.Pool.Desired != 2 {
			t.Errorf("after a refused scale: pool.desired = %d, want 2", st.Pool.Desired)
		}
		if after := d.Workers(t); !maps.Equal(before, after) {
			t.Errorf("a refused scale changed the workers from %v to %v", before, after)
		}
		if d.Exited() {
			t.Error("a refused stop stopped chattyd")
		}
	})

	t.Run("group", func(t *testing.T) {
		t.Parallel()
		// chattyd creates the socket's directory and gives it, and the
		// socket, to the group.
		sock := filepath.Join(openSocketDir(t), "run", "control.sock")
		d := harness.StartDaemon(t, harness.Options{
			Config:        sleepers(1) + "control:\n  group: nogroup\n",
			ControlSocket: sock,
		})
		d.WaitWorkers(t, 1, short)
		for _, path := range []string{filepath.Dir(sock), sock} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != 65534 {
				t.Errorf("%s belongs to gid %d, want nogroup (65534)", path, gid)
			}
		}
		if r := ctlAs(t, nobody, bin, sock, "scale", "2"); r.code != 0 || r.stdout != "workers: 1 -> 2\n" {
			t.Errorf("scale as a member of the control group: %s", r)
		}
		d.WaitWorkers(t, 2, short)

		// Not a member: the directory keeps it out.
		other := &syscall.Credential{Uid: 65533, Gid: 65533}
		r := ctlAs(t, other, bin, sock, "status")
		if want := "permission denied on " + sock; r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("status as uid 65533: %s\nwant exit status 1 and %q", r, want)
		}
	})
}

// Malformed requests get a 4xx JSON error and change nothing.
func TestCtlMalformedRequests(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: sleepers(2)})
	sock := d.ControlSocket()
	workers := d.WaitWorkers(t, 2, short)
	c := admitted(t, d, 1)[0]
	before := ctlStatus(t, sock)
	mark := d.LogLen()

	big := strings.Repeat("x", 70<<10)
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		want                     string // in the error
		allow                    string // the Allow header, for 405
	}{
		{"bad JSON", "POST", "/v1/scale", `{"workers": 3,}`, 400, "malformed JSON at byte", ""},
		{"truncated JSON", "POST", "/v1/scale", `{"workers": 3`, 400, "malformed JSON", ""},
		{"unknown field", "POST", "/v1/scale", `{"worker": 3}`, 400, `unknown field "worker" at byte 1`, ""},
		{"duplicate key", "POST", "/v1/scale", `{"workers": 10001, "workers": 0}`, 400, `duplicate key "workers" at byte 19`, ""},
		{"field in another case", "POST", "/v1/send", `{"Type": "info", "Message": "x"}`, 400, `unknown field "Type" at byte 1`, ""},
		{"control character", "POST", "/v1/send", `{"type": "info", "message": "a\u001b[2J"}`, 400, "control character U+001B at byte 1", ""},
		{"wrong type", "POST", "/v1/scale", `{"workers": 1.5}`, 400, `field "workers" must be a whole number, not number 1.5`, ""},
		{"missing field", "POST", "/v1/scale", `{}`, 400, `field "workers" is required`, ""},
		{"empty body", "POST", "/v1/scale", ``, 400, "the body is empty", ""},
		{"two values", "POST", "/v1/scale", `{"workers": 3} {"workers": 4}`, 400, "single JSON object", ""},
		{"not an object", "POST", "/v1/scale", `[3]`, 400, "must be a JSON object", ""},
		{"negative", "POST", "/v1/scale", `{"workers": -1}`, 400, "want a whole number from 0 to 10000, got -1", ""},
		{"too many", "POST", "/v1/scale", `{"workers": 10001}`, 400, "want a whole number from 0 to 10000, got 10001", ""},
		{"unknown type", "POST", "/v1/send", `{"type": "loud", "message": "x"}`, 400,
			"want one of Request, Response, Critical, Info, Warning, Debug, Error", ""},
		{"line break", "POST", "/v1/send", `{"type": "info", "message": "a\nb"}`, 400, "line break", ""},
		{"stop with a body", "POST", "/v1/stop", `{"now": true}`, 400, `unknown field "now"`, ""},
		{"GET scale", "GET", "/v1/scale", "", 405, "method GET not allowed on /v1/scale", "POST"},
		{"POST status", "POST", "/v1/status", "", 405, "method POST not allowed on /v1/status", "GET, HEAD"},
		{"DELETE stop", "DELETE", "/v1/stop", "", 405, "not allowed", "POST"},
		{"unknown path", "GET", "/v1/nothing", "", 404, "no such endpoint /v1/nothing", ""},
		{"unversioned", "GET", "/status", "", 404, "no such endpoint /status", ""},
		{"oversized scale", "POST", "/v1/scale", `{"workers": 3, "pad": "` + big + `"}`, 413, "larger than 65536 bytes", ""},
		{"oversized send", "POST", "/v1/send", `{"type": "info", "message": "` + big + `"}`, 413, "larger than 65536 bytes", ""},
		{"oversized stop", "POST", "/v1/stop", `{"pad": "` + big + `"}`, 413, "larger than 65536 bytes", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := httpDo(t, sock, tc.method, tc.path, tc.body)
			if resp.StatusCode != tc.code {
				t.Errorf("status %s, want %d: %s", resp.Status, tc.code, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			var e map[string]any
			if err := json.Unmarshal(body, &e); err != nil || len(e) != 1 {
				t.Fatalf("the body is not {\"error\": ...}: %v: %s", err, body)
			}
			if msg, _ := e["error"].(string); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q; want it to contain %q", msg, tc.want)
			}
		})
	}

	after := ctlStatus(t, sock)
	if after.Pool.Desired != before.Pool.Desired || after.Pool.Running != before.Pool.Running ||
		after.Feed != before.Feed || after.Clients != before.Clients {
		t.Errorf("the status changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if now := d.Workers(t); !maps.Equal(now, workers) {
		t.Errorf("the workers changed from %v to %v", workers, now)
	}
	for _, s := range []string{"message sent", "pool scaled", "stop requested"} {
		if strings.Contains(d.Log()[mark:], s) {
			t.Errorf("a malformed request got through: %q in the log:\n%s", s, d.Log()[mark:])
		}
	}
	d.Feed("nothing before me")
	if got := c.ReadLine(short); got != "nothing before me" {
		t.Errorf("the client got %q; want the fed line, no message before it", got)
	}
	if d.Exited() {
		t.Fatal("chattyd exited")
	}
}

// The curl examples of docs/control.md work as shown.
func TestCtlCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (.ci/run installs it)")
	}
	d := harness.StartDaemon(t, harness.Options{Config: sleepers(1)})
	sock := d.ControlSocket()
	c := admitted(t, d, 1)[0]
	run := func(args ...string) (int, string) {
		t.Helper()
		args = append([]string{"-sS", "--unix-socket", sock, "-w", "\n%{http_code}"}, args...)
		out, err := exec.Command(curl, args...).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", strings.Join(args, " "), err)
		}
		i := bytes.LastIndexByte(out, '\n')
		n, err := strconv.Atoi(string(out[i+1:]))
		if i < 0 || err != nil {
			t.Fatalf("curl: no status code at the end of %q", out)
		}
		return n, string(out[:i])
	}

	code, body := run("http://chattyd/v1/status")
	var st wireStatus
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Clients.Connected != 1 || st.Pool.Desired != 1 {
		t.Errorf("GET /v1/status: %d %s", code, body)
	}
	code, body = run("http://chattyd/v1/clients")
	var clients []wireClient
	if code != 200 || json.Unmarshal([]byte(body), &clients) != nil || len(clients) != 1 {
		t.Errorf("GET /v1/clients: %d %s", code, body)
	}
	code, body = run("-d", `{"type":"warning","message":"disk almost full"}`, "http://chattyd/v1/send")
	var sent struct {
		Seq  uint64 `json:"seq"`
		Line string `json:"line"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &sent) != nil || !warningLineRE.MatchString(sent.Line) {
		t.Errorf("POST /v1/send: %d %s", code, body)
	}
	if got := c.ReadLine(short); got != sent.Line {
		t.Errorf("the client got %q; want %q", got, sent.Line)
	}
	code, body = run("-d", `{"workers":3}`, "http://chattyd/v1/scale")
	if code != 200 || !strings.Contains(body, `"old": 1`) || !strings.Contains(body, `"new": 3`) {
		t.Errorf("POST /v1/scale: %d %s", code, body)
	}
	d.WaitWorkers(t, 3, short)
	code, body = run("http://chattyd/metrics")
	if code != 200 || parseMetrics(body)["chatty_pool_workers_desired"] != "3" {
		t.Errorf("GET /metrics: %d, chatty_pool_workers_desired %q", code, parseMetrics(body)["chatty_pool_workers_desired"])
	}
	code, body = run("-X", "POST", "http://chattyd/v1/stop")
	if code != 202 || !strings.Contains(body, `"stopping": true`) {
		t.Errorf("POST /v1/stop: %d %s", code, body)
	}
	// Like a worker, the client leaves when chattyd ends the stream;
	// chattyd waits for that (up to broadcast.drain_timeout).
	c.ExpectClosed(short)
	c.Close()
	if code := d.Wait(short); code != 0 {
		t.Errorf("chattyd exit status %d after POST /v1/stop, want 0", code)
	}
}

// chattyctl watch prints what the broadcaster sends, found with --addr or
// from the status.
func TestCtlWatch(t *testing.T) {
	t.Parallel()
	for _, withAddr := range []bool{true, false} {
		t.Run(fmt.Sprintf("addr=%v", withAddr), func(t *testing.T) {
			t.Parallel()
			d := harness.StartDaemon(t, harness.Options{})
			sock := d.ControlSocket()
			args := []string{"--socket", sock, "watch"}
			if withAddr {
				args = append(args, "--addr", d.Addr())
			}
			lines := startWatch(t, args...)
			waitStatus(t, sock, "the watcher connected", func(st wireStatus) bool { return st.Clients.Connected == 1 })

			want := numbered("watch", 1, 3, 0)
			d.Feed(want...)
			deadline := time.After(short)
			for i, w := range want {
				select {
				case got, ok := <-lines:
					if !ok {
						t.Fatalf("chattyctl watch ended before line %d", i+1)
					}
					if got != w {
						t.Fatalf("watch printed %q, want %q", got, w)
					}
				case <-deadline:
					t.Fatalf("watch printed %d of %d lines within %s", i, len(want), short)
				}
			}
		})
	}
}

// startWatch starts chattyctl with args and returns its stdout's lines.
// It is killed when the test ends.
func startWatch(t *testing.T, args ...string) <-chan string {
	t.Helper()
	cmd := exec.Command(harness.BuildBinaries(t).Chattyctl, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		// Drain, so that the reader ends and Wait may close the pipe.
		for range lines {
		}
		<-done
		cmd.Wait()
		if t.Failed() {
			t.Logf("chattyctl watch's stderr: %s", &stderr)
		}
	})
	return lines
}

// Without a daemon, chattyctl says so and exits 1.
func TestCtlNoDaemon(t *testing.T) {
	t.Parallel()
	dir := harness.SocketDir(t)
	missing := filepath.Join(dir, "missing.sock")
	for _, args := range [][]string{{"status"}, {"status", "--json"}, {"clients"}, {"workers"},
		{"scale", "2"}, {"send", "info", "hi"}, {"stop"}, {"stop", "--no-wait"}, {"watch"}} {
		r := ctl(t, missing, args...)
		want := "cannot reach chattyd at " + missing + ": no such file; is chattyd running?"
		if r.code != 1 || !strings.Contains(r.stderr, want) || r.stdout != "" {
			t.Errorf("chattyctl %s without chattyd: %s\nwant exit status 1 and %q", strings.Join(args, " "), r, want)
		}
	}
}
