package webfeed_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/broadcast"
	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/internal/webfeed"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"
)

// testLimits are roomy limits; tests narrow what they exercise.
func testLimits() broadcast.Limits {
	return broadcast.Limits{
		MaxClientLine: 4096,
		QueueBytes:    16 << 20,
		QueueLines:    1 << 18,
		DrainTimeout:  2 * time.Second,
	}
}

// feedServer is a WebSocket listener as chattyd runs it: the HTTP side
// and the broadcast server of its clients.
type feedServer struct {
	web  *webfeed.Server
	bc   *broadcast.Server
	addr string
}

func startFeed(t *testing.T, lim broadcast.Limits, o webfeed.Options, wo broadcast.WebSocketOptions, setup ...func(*broadcast.Server)) *feedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	log := logrus.NewEntry(logger)
	web := webfeed.New(ln, o, log)
	web.SetStatus(func() control.Status {
		return control.Status{Version: "test", Pool: control.PoolStatus{Desired: 3, Running: 3}}
	})
	wo.Start = web.Start
	bc := broadcast.NewWebSocket(web.Feed(), lim, wo, log)
	web.SetNext(bc.NextSeq)
	for _, f := range setup {
		f(bc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() { errs <- web.Run(ctx) })
	wg.Go(func() { errs <- bc.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		for range 2 {
			select {
			case err := <-errs:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("Run did not return: a client was left behind")
				return
			}
		}
		wg.Wait()
	})
	return &feedServer{web: web, bc: bc, addr: ln.Addr().String()}
}

func (f *feedServer) url(query string) string {
	u := "ws://" + f.addr + webfeed.PathFeed
	if query != "" {
		u += "?" + query
	}
	return u
}

// dial opens the feed; it fails the test unless the handshake succeeds.
func (f *feedServer) dial(t *testing.T, query string, h http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(f.url(query), h)
	if err != nil {
		t.Fatalf("dial %s: %v (%s)", f.url(query), err, body(resp))
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func body(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *feedServer) waitClients(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d clients", n), func() bool { return f.bc.Stats().Connected == n })
}

// Every line reaches every client, in order, as one message each: text,
// or binary for a line that is not UTF-8.
func TestEveryLineInOrderToManyClients(t *testing.T) {
	f := startFeed(t, testLimits(), webfeed.Options{}, broadcast.WebSocketOptions{})
	const clients, lines = 20, 3000
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = f.dial(t, "", nil)
	}
	f.waitClients(t, clients)

	want := make([][]byte, lines)
	for i := range want {
		want[i] = fmt.Appendf(nil, "line %d %s", i, strings.Repeat("x", i%300))
		if i%100 == 7 {
			want[i] = append(want[i], 0xff, 0xfe) // not UTF-8
		}
	}
	errs := make(chan error, clients)
	for _, c := range conns {
		go func() {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			for i, w := range want {
				typ, got, err := c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("message %d: %w", i, err)
					return
				}
				wantType := websocket.TextMessage
				if i%100 == 7 {
					wantType = websocket.BinaryMessage
				}
				if typ != wantType || !bytes.Equal(got, w) {
					errs <- fmt.Errorf("message %d: type %d %q, want type %d %q", i, typ, got, wantType, w)
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < lines; i += 50 {
		f.bc.Publish(want[i:min(i+50, lines)])
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// smallReceiveBuffer makes a dialer whose sockets hold little unread, so
// that a client that stops reading soon lags.
func smallReceiveBuffer() *websocket.Dialer {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	return &websocket.Dialer{NetDialContext: d.DialContext, HandshakeTimeout: 5 * time.Second}
}

// A client that stops reading is closed as a slow consumer, with close
// code 1008 and a reason after the messages it was sent, while the others
// get every line.
func TestSlowConsumerClosedWithCodeWhileOthersKeepUp(t *testing.T) {
	lim := testLimits()
	lim.QueueLines = 200
	f := startFeed(t, lim, webfeed.Options{}, broadcast.WebSocketOptions{})
	slow, _, err := smallReceiveBuffer().Dial(f.url(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	const others = 4
	fast := make([]*websocket.Conn, others)
	for i := range fast {
		fast[i] = f.dial(t, "", nil)
	}
	f.waitClients(t, others+1)

	line := []byte(strings.Repeat("y", 1000))
	var published sync.WaitGroup
	counts := make([]int, others)
	var readers sync.WaitGroup
	for i, c := range fast {
		readers.Go(func() {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			for {
				_, m, err := c.ReadMessage()
				if err != nil {
					t.Errorf("fast client %d after %d messages: %v", i, counts[i], err)
					return
				}
				if string(m) == "end" {
					return
				}
				counts[i]++
			}
		})
	}
	published.Add(1)
	sent := 0
	go func() {
		defer published.Done()
		for f.bc.Stats().SlowConsumers == 0 && sent < 200000 {
			f.bc.Publish([][]byte{line, line, line, line})
			sent += 4
		}
		f.bc.Publish([][]byte{[]byte("end")})
	}()
	published.Wait()
	if f.bc.Stats().SlowConsumers != 1 {
		t.Fatalf("no slow consumer after %d lines", sent)
	}
	readers.Wait()
	for i, n := range counts {
		if n != sent {
			t.Errorf("fast client %d got %d lines of %d", i, n, sent)
		}
	}
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := 0
	for {
		_, m, err := slow.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "slow consumer") {
				t.Fatalf("slow client ended with %v after %d messages, want close 1008 (slow consumer)", err, got)
			}
			break
		}
		if !bytes.Equal(m, line) {
			t.Fatalf("slow client message %d is %q", got, m)
		}
		got++
	}
	if got == 0 || got >= sent {
		t.Errorf("slow client got %d of %d lines before its close", got, sent)
	}
	f.waitClients(t, others)
}

// A page of another origin is refused; the listener's own and the allowed
// ones are not; a client that sends no Origin (no browser) is not either.
func TestOrigins(t *testing.T) {
	f := startFeed(t, testLimits(), webfeed.Options{AllowedOrigins: []string{"https://ok.example"}}, broadcast.WebSocketOptions{})
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + f.addr, true},
		{"https://ok.example", true},
		{"https://evil.example", false},
		{"http://ok.example", false},
		{"https://" + f.addr, false}, // the server is not HTTPS
	} {
		t.Run(tc.origin, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			c, resp, err := websocket.DefaultDialer.Dial(f.url(""), h)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v (%s)", err, body(resp))
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("accepted")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("refused with %v (%s), want 403", err, body(resp))
			}
			if b := body(resp); !strings.Contains(b, "allowed_origins") {
				t.Errorf("refusal %q does not say what to change", b)
			}
			// The status is refused to it too.
			req, _ := http.NewRequest("GET", "http://"+f.addr+webfeed.PathStatus, nil)
			req.Header.Set("Origin", tc.origin)
			sresp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			sresp.Body.Close()
			if sresp.StatusCode != http.StatusForbidden {
				t.Errorf("status answered %d to origin %s, want 403", sresp.StatusCode, tc.origin)
			}
		})
	}
}

// With a token, the feed and the status are refused without it or with a
// wrong one, and served with it, as a header or in the query.
func TestToken(t *testing.T) {
	const tok = "0123456789abcdef0123"
	f := startFeed(t, testLimits(), webfeed.Options{Token: tok}, broadcast.WebSocketOptions{})
	for _, tc := range []struct {
		name, query, header string
		ok                  bool
	}{
		{"none", "", "", false},
		{"wrong header", "", "Bearer 0123456789abcdef0124", false},
		{"wrong query", "access_token=nope", "", false},
		{"prefix", "access_token=" + tok[:10], "", false},
		{"header", "", "Bearer " + tok, true},
		{"query", "access_token=" + tok, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.header != "" {
				h.Set("Authorization", tc.header)
			}
			c, resp, err := websocket.DefaultDialer.Dial(f.url(tc.query), h)
			if err == nil {
				c.Close()
			}
			if tc.ok != (err == nil) {
				t.Fatalf("dial: %v (%s), want ok=%v", err, body(resp), tc.ok)
			}
			if !tc.ok && (resp == nil || resp.StatusCode != http.StatusUnauthorized) {
				t.Errorf("refused with %s, want 401", body(resp))
			}
			req, _ := http.NewRequest("GET", "http://"+f.addr+webfeed.PathStatus+"?"+tc.query, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			sresp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			sresp.Body.Close()
			if want := map[bool]int{true: 200, false: 401}[tc.ok]; sresp.StatusCode != want {
				t.Errorf("status answered %d, want %d", sresp.StatusCode, want)
			}
		})
	}
}

// A client message over max_client_line closes the client with 1009; the
// feed is read-only, so a small one is counted and ignored.
func TestOversizedClientMessageRefused(t *testing.T) {
	lim := testLimits()
	lim.MaxClientLine = 100
	f := startFeed(t, lim, webfeed.Options{}, broadcast.WebSocketOptions{})
	c := f.dial(t, "", nil)
	f.waitClients(t, 1)
	if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the small message counted", func() bool { return f.bc.Stats().UnknownLines == 1 })
	f.bc.Publish([][]byte{[]byte("still here")})
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, m, err := c.ReadMessage(); err != nil || string(m) != "still here" {
		t.Fatalf("after a small message: %q, %v", m, err)
	}
	if err := c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("z"), 101)); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig || !strings.Contains(ce.Text, "100 bytes") {
		t.Fatalf("after an oversized message: %v, want close 1009 naming the limit", err)
	}
	if n := f.bc.Stats().Protocol; n != 1 {
		t.Errorf("protocol violations %d, want 1", n)
	}
	f.waitClients(t, 0)
}

// The server pings every client, answers a client's ping with a pong,
// and closes one that answers nothing for the idle timeout.
func TestPingPongAndDeadPeer(t *testing.T) {
	lim := testLimits()
	lim.IdleTimeout = 3 * time.Second
	f := startFeed(t, lim, webfeed.Options{}, broadcast.WebSocketOptions{PingInterval: 100 * time.Millisecond})
	c := f.dial(t, "", nil)
	pinged := make(chan struct{}, 100)
	c.SetPingHandler(func(data string) error {
		pinged <- struct{}{}
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	ponged := make(chan string, 1)
	c.SetPongHandler(func(data string) error { ponged <- data; return nil })
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-ponged:
		if d != "are you there" {
			t.Errorf("pong %q", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pong")
	}
	for range 3 {
		select {
		case <-pinged:
		case <-time.After(10 * time.Second):
			t.Fatal("not pinged")
		}
	}

	// A peer that completed the handshake and then is silent: no pong.
	dead, _, err := websocket.DefaultDialer.Dial(f.url(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	f.waitClients(t, 2)
	waitFor(t, "the silent client closed as idle and only the live one connected", func() bool {
		st := f.bc.Stats()
		return st.IdleClosed == 1 && st.Connected == 1
	})
}

// A client over max_clients is closed with 1013 and a reason.
func TestMaxClients(t *testing.T) {
	lim := testLimits()
	lim.MaxClients = 1
	f := startFeed(t, lim, webfeed.Options{}, broadcast.WebSocketOptions{})
	f.dial(t, "", nil)
	f.waitClients(t, 1)
	c := f.dial(t, "", nil)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater || !strings.Contains(ce.Text, "max_clients 1") {
		t.Fatalf("second client: %v, want close 1013 naming max_clients", err)
	}
}

// The page is served with its policy; the status is the control API's.
func TestPageAndStatus(t *testing.T) {
	f := startFeed(t, testLimits(), webfeed.Options{}, broadcast.WebSocketOptions{})
	resp, err := http.Get("http://" + f.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(page, []byte("<title>chatty feed</title>")) {
		t.Fatalf("page: %d %.100s", resp.StatusCode, page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'sha256-") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("policy %q", csp)
	}
	if bytes.Contains(page, []byte("http://")) || bytes.Contains(page, []byte("https://")) {
		t.Error("the page names an external address")
	}
	resp, err = http.Get("http://" + f.addr + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %d", resp.StatusCode)
	}
	resp, err = http.Post("http://"+f.addr+webfeed.PathStatus, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST status: %d, want 405", resp.StatusCode)
	}
	resp, err = http.Get("http://" + f.addr + webfeed.PathStatus)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st control.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Version != "test" || st.Pool.Running != 3 {
		t.Errorf("status %+v, %v", st, err)
	}
}

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	if tok, err := webfeed.LoadToken(write("good", "0123456789abcdef\n", 0o600)); err != nil || tok != "0123456789abcdef" {
		t.Errorf("good token: %q, %v", tok, err)
	}
	for _, tc := range []struct{ name, content, want string }{
		{"open", "0123456789abcdef\n", "chmod 600"},
		{"empty", "\n", "empty"},
		{"short", "abc\n", "at least 16"},
		{"two", "0123456789abcdef 0123456789abcdef\n", "more than one word"},
	} {
		mode := os.FileMode(0o600)
		if tc.name == "open" {
			mode = 0o644
		}
		_, err := webfeed.LoadToken(write(tc.name, tc.content, mode))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// readText reads one message and fails the test unless it is text.
func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, m, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("message %q of type %d", m, typ)
	}
	return string(m)
}

// A client that asks with from= gets a preamble naming the stream and the
// first sequence number, then every line from there, the live ones
// following; a gap in the numbers is a message too.
func TestResume(t *testing.T) {
	f := startFeed(t, testLimits(), webfeed.Options{}, broadcast.WebSocketOptions{}, func(s *broadcast.Server) {
		s.SetStream("s1")
		s.SetRetention(broadcast.Retention{Bytes: 64 << 20})
	})
	var lines [][]byte
	for i := 1; i <= 10; i++ {
		l := fmt.Appendf(nil, "line %d", i)
		if i == 4 {
			l = append(l, bytes.Repeat([]byte("-"), 70000)...) // a 64-bit length
		}
		lines = append(lines, l)
	}
	f.bc.Publish(lines)

	for _, tc := range []struct {
		name, query, preamble string
		first                 int
	}{
		{"first", "from=first", `{"stream":"s1","first":1}`, 1},
		{"seq", "from=5&stream=s1", `{"stream":"s1","first":5}`, 5},
		{"next", "from=next", `{"stream":"s1","first":11}`, 11},
		{"other stream", "from=7&stream=old", `{"stream":"s1","first":1,"changed_from":"old"}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(t, tc.query, nil)
			if got := readText(t, c); got != tc.preamble+"\n" {
				t.Fatalf("preamble %q, want %q", got, tc.preamble+"\n")
			}
			for i := tc.first; i <= 10; i++ {
				if got := readText(t, c); got != string(lines[i-1]) {
					t.Fatalf("line %d: %.40q", i, got)
				}
			}
		})
	}
	f.waitClients(t, 0) // the subtests' clients are gone
	live := f.dial(t, "", nil)
	f.waitClients(t, 1)
	if err := f.bc.PublishAt(20, [][]byte{[]byte("line 20")}); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, live); got != `{"gap":{"from":11,"to":19}}`+"\n" {
		t.Errorf("a live client's gap: %q", got)
	}
	if got := readText(t, live); got != "line 20" {
		t.Errorf("after the gap: %q", got)
	}
	c := f.dial(t, "from=12", nil)
	if got := readText(t, c); got != `{"stream":"s1","first":20,"gap":{"from":12,"to":19}}`+"\n" {
		t.Errorf("resuming into the gap: %q", got)
	}
	if got := readText(t, c); got != "line 20" {
		t.Errorf("after the gap: %q", got)
	}

	// Ahead of the stream: refused with a reason.
	c = f.dial(t, "from=99", nil)
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "ahead") {
		t.Errorf("from=99: %v, want close 1008 saying it is ahead", err)
	}
	_, resp, err := websocket.DefaultDialer.Dial(f.url("from=0"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("from=0: %v (%s), want 400", err, body(resp))
	}
}

// A client of ?from=next starts where the feed was when its request
// arrived: a line published after that, while the connection is being
// upgraded and before it is admitted, reaches it, first of the lines.
func TestFromNextStartsAtTheRequest(t *testing.T) {
	f := startFeed(t, testLimits(), webfeed.Options{}, broadcast.WebSocketOptions{}, func(s *broadcast.Server) {
		s.SetStream("s1")
	})
	f.bc.Publish([][]byte{[]byte("before")})
	// The hook stays set until the test ends: the client's handshake
	// can finish before the server's goroutine reaches the hook, and
	// the preamble, read below, is written only after the hook ran.
	webfeed.SetUpgradedHook(func() { f.bc.Publish([][]byte{[]byte("between")}) })
	t.Cleanup(func() { webfeed.SetUpgradedHook(nil) })
	c := f.dial(t, "from=next", nil)
	if got := readText(t, c); got != `{"stream":"s1","first":2}`+"\n" {
		t.Fatalf("preamble %q, want the line after \"before\" first", got)
	}
	f.waitClients(t, 1)
	f.bc.Publish([][]byte{[]byte("after")})
	for _, want := range []string{"between", "after"} {
		if got := readText(t, c); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// Over TLS: the page, the lines and the close frames as over TCP.
func TestTLS(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tlsconf.SelfSigned(priv, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lim := testLimits()
	lim.MaxClientLine = 100
	f := startFeed(t, lim, webfeed.Options{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}}, broadcast.WebSocketOptions{})
	insecure := &tls.Config{InsecureSkipVerify: true} // the test's own certificate
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure}}
	resp, err := hc.Get("https://" + f.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("page over TLS: %d", resp.StatusCode)
	}
	d := websocket.Dialer{TLSClientConfig: insecure, HandshakeTimeout: 5 * time.Second}
	h := http.Header{"Origin": {"https://" + f.addr}} // same origin, over https
	c, resp, err := d.Dial("wss://"+f.addr+webfeed.PathFeed, h)
	if err != nil {
		t.Fatalf("dial: %v (%s)", err, body(resp))
	}
	defer c.Close()
	f.waitClients(t, 1)
	f.bc.Publish([][]byte{[]byte("one"), []byte("two")})
	for _, want := range []string{"one", "two"} {
		if got := readText(t, c); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if err := c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("z"), 101)); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("after an oversized message: %v, want close 1009", err)
	}
	f.waitClients(t, 0)
}

// A slow consumer that never reads again cannot be sent its close frame:
// it is closed all the same, once the close frame's grace is over, and
// leaves nothing behind.
func TestSlowConsumerThatNeverReadsIsClosed(t *testing.T) {
	lim := testLimits()
	lim.QueueLines = 200
	f := startFeed(t, lim, webfeed.Options{}, broadcast.WebSocketOptions{})
	stuck, _, err := smallReceiveBuffer().Dial(f.url(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	f.waitClients(t, 1)
	line := []byte(strings.Repeat("y", 1000))
	for sent := 0; f.bc.Stats().SlowConsumers == 0; sent += 4 {
		if sent > 200000 {
			t.Fatal("no slow consumer")
		}
		f.bc.Publish([][]byte{line, line, line, line})
	}
	f.waitClients(t, 0)
}
