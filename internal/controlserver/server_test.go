package controlserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/controlserver"

	"github.com/chatty-dev/chatty/internal/controlserver/controltest"
	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/pkg/message"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	os.Exit(m.Run())
}

// rawDo sends one request to the socket at path, bypassing the client so
// that any body can be sent.
func rawDo(t *testing.T, path, method, url, body string) (int, http.Header, []byte) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequest(method, "http://chattyd"+url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, data
}

func fixedStatus() control.Status {
	return control.Status{
		Version:       "1.2.3",
		StartedAt:     time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC),
		UptimeSeconds: 3600,
		Listeners:     []control.Listener{{Name: "broadcast", Addr: "127.0.0.1:54321", Protocol: "tcp", Clients: 2}},
		Feed:          control.FeedStatus{Source: "stdin", State: control.FeedReading, Lines: 42, Bytes: 2048, Dropped: 3, Undelivered: 5},
		Clients:       control.ClientsSummary{Connected: 2, Authenticating: 1, Accepted: 7, Refused: 1, UnauthenticatedRefused: 8, SlowConsumers: 4, IdleClosed: 6, AcksGood: 40, AcksMismatched: 2, KeepAlives: 11, UnknownLines: 13},
		Pool: control.PoolStatus{Running: 1, Restarts: 9, Replay: "unacked",
			ReplayTotals: control.ReplayCounters{Identified: 21, Resumed: 20, Gaps: 2, GapLines: 300, Duplicates: 17}, Slots: []control.Worker{
				{Slot: 1, PID: 4242, State: "running", Restarts: 9, LastExit: "exited with code 2"},
			}},
	}
}

func newFake() *controltest.Backend {
	b := controltest.NewBackend(4)
	b.StatusValue = fixedStatus()
	b.ClientsValue = []control.Client{{ID: 1, Remote: "127.0.0.1:40000", LinesSent: 10}}
	b.WorkersValue = fixedStatus().Pool.Slots
	return b
}

func TestHandlers(t *testing.T) {
	big := `{"workers": 1, "pad": "` + strings.Repeat("x", control.MaxRequestBytes) + `"}`
	tests := []struct {
		name       string
		method     string
		url        string
		body       string
		wantCode   int
		wantBody   string   // a substring of the answer
		wantCalls  []string // nil: the backend must see no call
		wantHeader [2]string
	}{
		{name: "status", method: "GET", url: "/v1/status", wantCode: 200,
			wantBody: `"version": "1.2.3"`, wantCalls: []string{"status"}},
		{name: "status snake case", method: "GET", url: "/v1/status", wantCode: 200,
			wantBody: `"acks_mismatched": 2`, wantCalls: []string{"status"}},
		{name: "status head", method: "HEAD", url: "/v1/status", wantCode: 200, wantCalls: []string{"status"}},
		{name: "clients", method: "GET", url: "/v1/clients", wantCode: 200,
			wantBody: `"remote": "127.0.0.1:40000"`, wantCalls: []string{"clients"}},
		{name: "workers", method: "GET", url: "/v1/workers", wantCode: 200,
			wantBody: `"last_exit": "exited with code 2"`, wantCalls: []string{"workers"}},

		{name: "send", method: "POST", url: "/v1/send", body: `{"type":"Warning","message":"disk almost full"}`,
			wantCode: 200, wantBody: `[Warning] disk almost full"`, wantCalls: []string{"send Warning disk almost full"}},
		{name: "send lower-case type", method: "POST", url: "/v1/send", body: `{"type":"critical","message":"on fire"}`,
			wantCode: 200, wantBody: `"seq": 1`, wantCalls: []string{"send Critical on fire"}},
		{name: "send unknown type", method: "POST", url: "/v1/send", body: `{"type":"Notice","message":"x"}`,
			wantCode: 400, wantBody: "want one of Request, Response, Critical, Info, Warning, Debug, Error"},
		{name: "send newline", method: "POST", url: "/v1/send", body: `{"type":"Info","message":"a\nb"}`,
			wantCode: 400, wantBody: "line break"},
		{name: "send carriage return", method: "POST", url: "/v1/send", body: `{"type":"Info","message":"a\rb"}`,
			wantCode: 400, wantBody: "line break"},
		{name: "send empty message", method: "POST", url: "/v1/send", body: `{"type":"Info","message":""}`,
			wantCode: 400, wantBody: "the text is empty"},
		{name: "send missing type", method: "POST", url: "/v1/send", body: `{"message":"x"}`,
			wantCode: 400, wantBody: `field \"type\" is required`},
		{name: "send too long", method: "POST", url: "/v1/send",
			body:     `{"type":"Info","message":"` + strings.Repeat("y", message.MaxTextBytes+1) + `"}`,
			wantCode: 400, wantBody: "more than the limit of 4096"},
		{name: "send number type", method: "POST", url: "/v1/send", body: `{"type":3,"message":"x"}`,
			wantCode: 400, wantBody: `field \"type\" must be a string, not number`},

		{name: "scale", method: "POST", url: "/v1/scale", body: `{"workers":3}`,
			wantCode: 200, wantBody: `"old": 4`, wantCalls: []string{"scale 3"}},
		{name: "scale to zero", method: "POST", url: "/v1/scale", body: `{"workers":0}`,
			wantCode: 200, wantBody: `"new": 0`, wantCalls: []string{"scale 0"}},
		{name: "scale to max", method: "POST", url: "/v1/scale", body: `{"workers":10}`,
			wantCode: 200, wantBody: `"new": 10`, wantCalls: []string{"scale 10"}},
		{name: "scale negative", method: "POST", url: "/v1/scale", body: `{"workers":-1}`,
			wantCode: 400, wantBody: "want a whole number from 0 to 10, got -1"},
		{name: "scale too big", method: "POST", url: "/v1/scale", body: `{"workers":11}`,
			wantCode: 400, wantBody: "want a whole number from 0 to 10, got 11"},
		{name: "scale non-integer", method: "POST", url: "/v1/scale", body: `{"workers":1.5}`,
			wantCode: 400, wantBody: `field \"workers\" must be a whole number, not number 1.5`},
		{name: "scale string", method: "POST", url: "/v1/scale", body: `{"workers":"3"}`,
			wantCode: 400, wantBody: `must be a whole number, not string`},
		{name: "scale huge number", method: "POST", url: "/v1/scale", body: `{"workers":1e40}`,
			wantCode: 400, wantBody: `must be a whole number`},
		{name: "scale unknown field", method: "POST", url: "/v1/scale", body: `{"workers":1,"force":true}`,
			wantCode: 400, wantBody: `unknown field \"force\"`},
		{name: "scale misspelt field", method: "POST", url: "/v1/scale", body: `{"worker":1}`,
			wantCode: 400, wantBody: `unknown field \"worker\"`},
		{name: "scale two values", method: "POST", url: "/v1/scale", body: `{"workers":1} {"workers":2}`,
			wantCode: 400, wantBody: "a single JSON object"},
		{name: "scale trailing garbage", method: "POST", url: "/v1/scale", body: `{"workers":1}x`,
			wantCode: 400, wantBody: "malformed JSON"},
		{name: "scale missing workers", method: "POST", url: "/v1/scale", body: `{}`,
			wantCode: 400, wantBody: `field \"workers\" is required`},
		{name: "scale empty body", method: "POST", url: "/v1/scale", body: ``,
			wantCode: 400, wantBody: "the body is empty"},
		{name: "scale truncated", method: "POST", url: "/v1/scale", body: `{"workers":`,
			wantCode: 400, wantBody: "ends too early"},
		{name: "scale array", method: "POST", url: "/v1/scale", body: `[1]`,
			wantCode: 400, wantBody: "must be a JSON object, not array"},
		{name: "scale oversized body", method: "POST", url: "/v1/scale", body: big,
			wantCode: 413, wantBody: "larger than 65536 bytes"},

		{name: "stop with a bad body", method: "POST", url: "/v1/stop", body: `{"now":true}`,
			wantCode: 400, wantBody: `unknown field \"now\"`},
		{name: "scale duplicate key", method: "POST", url: "/v1/scale", body: `{"workers": 10001, "workers": 0}`,
			wantCode: 400, wantBody: `duplicate key \"workers\" at byte 19`},
		{name: "scale duplicate key, escaped", method: "POST", url: "/v1/scale", body: `{"workers":1,"work\u0065rs":2}`,
			wantCode: 400, wantBody: `duplicate key \"workers\" at byte 13`},
		{name: "scale capitalised field", method: "POST", url: "/v1/scale", body: `{"Workers":3}`,
			wantCode: 400, wantBody: `unknown field \"Workers\" at byte 1: the fields are \"workers\", in lower case`},
		{name: "scale folded field", method: "POST", url: "/v1/scale", body: `{"wor\u212aers":3}`,
			wantCode: 400, wantBody: "unknown field \\\"wor\u212aers\\\" at byte 1"},
		{name: "send capitalised fields", method: "POST", url: "/v1/send", body: `{"Type": "info", "Message": "x"}`,
			wantCode: 400, wantBody: `unknown field \"Type\" at byte 1: the fields are \"type\" and \"message\"`},
		{name: "send duplicate message", method: "POST", url: "/v1/send", body: `{"type":"info","message":"a",` + "\n" + `  "message":"b"}`,
			wantCode: 400, wantBody: `duplicate key \"message\" at byte 32`},
		{name: "send NUL", method: "POST", url: "/v1/send", body: `{"type":"info","message":"a\u0000b"}`,
			wantCode: 400, wantBody: "control character U+0000 at byte 1"},
		{name: "send ESC title", method: "POST", url: "/v1/send", body: `{"type":"info","message":"\u001b]0;owned\u0007"}`,
			wantCode: 400, wantBody: "control character U+001B at byte 0"},
		{name: "send DEL", method: "POST", url: "/v1/send", body: "{\"type\":\"info\",\"message\":\"a\x7f\"}",
			wantCode: 400, wantBody: "control character U+007F at byte 1"},
		{name: "send C1 CSI", method: "POST", url: "/v1/send", body: `{"type":"info","message":"\u009b2J"}`,
			wantCode: 400, wantBody: "control character U+009B at byte 0"},
		{name: "send tab", method: "POST", url: "/v1/send", body: `{"type":"info","message":"a\tb"}`,
			wantCode: 200, wantBody: `[Info] a\tb"`, wantCalls: []string{"send Info a\tb"}},
		{name: "stop with a duplicate key", method: "POST", url: "/v1/stop", body: `{"a":1,"a":2}`,
			wantCode: 400, wantBody: `unknown field \"a\" at byte 1: this request takes no field`},

		{name: "get on send", method: "GET", url: "/v1/send", wantCode: 405,
			wantBody: "method GET not allowed on /v1/send; use POST", wantHeader: [2]string{"Allow", "POST"}},
		{name: "get on stop", method: "GET", url: "/v1/stop", wantCode: 405,
			wantHeader: [2]string{"Allow", "POST"}},
		{name: "delete on status", method: "DELETE", url: "/v1/status", wantCode: 405,
			wantHeader: [2]string{"Allow", "GET, HEAD"}},
		{name: "post on metrics", method: "POST", url: "/metrics", wantCode: 405,
			wantHeader: [2]string{"Allow", "GET, HEAD"}},
		{name: "unknown path", method: "GET", url: "/v1/nope", wantCode: 404, wantBody: "no such endpoint /v1/nope"},
		{name: "root", method: "GET", url: "/", wantCode: 404, wantBody: "no such endpoint /"},
		{name: "unversioned", method: "GET", url: "/status", wantCode: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFake()
			srv := controltest.Serve(t, b, controlserver.Options{MaxWorkers: 10})
			code, hdr, body := rawDo(t, srv.Addr(), tt.method, tt.url, tt.body)
			if code != tt.wantCode {
				t.Fatalf("code = %d; want %d; body %s", code, tt.wantCode, body)
			}
			if tt.method != "HEAD" {
				if ct := hdr.Get("Content-Type"); code != 200 && ct != "application/json" {
					t.Errorf("Content-Type = %q; want application/json", ct)
				}
				if !json.Valid(body) {
					t.Errorf("answer is not JSON: %s", body)
				}
			}
			if code >= 400 {
				var e control.ErrorResponse
				if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
					t.Errorf("error answer %s is not {\"error\": ...}", body)
				}
			}
			if !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("body %s does not contain %q", body, tt.wantBody)
			}
			if h := tt.wantHeader; h[0] != "" && hdr.Get(h[0]) != h[1] {
				t.Errorf("header %s = %q; want %q", h[0], hdr.Get(h[0]), h[1])
			}
			if got := b.Calls(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("backend calls = %q; want %q", got, tt.wantCalls)
			}
		})
	}
}

func TestBackendErrors(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode int
	}{
		{"invalid", fmt.Errorf("%w: pool is being drained", controlserver.ErrInvalid), 400},
		{"unavailable", fmt.Errorf("%w: shutting down", controlserver.ErrUnavailable), 503},
		{"other", fmt.Errorf("spawn failed"), 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFake()
			b.SendErr, b.ScaleErr = tt.err, tt.err
			srv := controltest.Serve(t, b, controlserver.Options{})
			c := client.New(srv.Addr())
			_, err := c.Scale(context.Background(), 2)
			checkAPIError(t, err, tt.wantCode, tt.err.Error())
			_, err = c.Send(context.Background(), control.SendRequest{Type: "Info", Message: "x"})
			checkAPIError(t, err, tt.wantCode, tt.err.Error())
		})
	}
}

// GET /v1/identity answers the daemon's public key, or 404 with a JSON
// error when it runs without an identity.
func TestIdentity(t *testing.T) {
	b := newFake()
	srv := controltest.Serve(t, b, controlserver.Options{})
	c := client.New(srv.Addr())
	_, err := c.Identity(context.Background())
	checkAPIError(t, err, 404, "no identity configured")
	code, _, body := rawDo(t, srv.Addr(), "GET", "/v1/identity", "")
	if code != 404 || !strings.Contains(string(body), `"error": "no identity configured`) {
		t.Errorf("GET /v1/identity = %d %s; want 404 with a JSON error", code, body)
	}

	want := control.Identity{PublicKey: "ssh-ed25519 AAAAC3Nza chattyd", Fingerprint: "SHA256:abc"}
	b = newFake()
	b.IdentityValue = &want
	srv = controltest.Serve(t, b, controlserver.Options{})
	got, err := client.New(srv.Addr()).Identity(context.Background())
	if err != nil || got != want {
		t.Fatalf("Identity = %+v, %v; want %+v", got, err, want)
	}
}

func checkAPIError(t *testing.T, err error, code int, msg string) {
	t.Helper()
	ae, ok := err.(*client.APIError)
	if !ok {
		t.Fatalf("error = %T %v; want *client.APIError", err, err)
	}
	if ae.Status != code || !strings.Contains(ae.Message, msg) {
		t.Fatalf("APIError = %d %q; want %d containing %q", ae.Status, ae.Message, code, msg)
	}
}

func TestClientCalls(t *testing.T) {
	b := newFake()
	srv := controltest.Serve(t, b, controlserver.Options{})
	c := client.New(srv.Addr())
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil || st.Version != "1.2.3" || st.Feed.Lines != 42 || st.Pool.Desired != 4 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	cs, err := c.Clients(ctx)
	if err != nil || len(cs) != 1 || cs[0].ID != 1 {
		t.Fatalf("Clients = %+v, %v", cs, err)
	}
	ws, err := c.Workers(ctx)
	if err != nil || len(ws) != 1 || ws[0].PID != 4242 {
		t.Fatalf("Workers = %+v, %v", ws, err)
	}
	sr, err := c.Send(ctx, control.SendRequest{Type: "debug", Message: "hello there"})
	if err != nil || sr.Seq != 1 || !strings.HasSuffix(sr.Line, " [Debug] hello there") {
		t.Fatalf("Send = %+v, %v", sr, err)
	}
	if sent := b.Sent(); len(sent) != 1 || sent[0].Time.IsZero() || sent[0].String() != sr.Line {
		t.Fatalf("backend got %+v; want the line %q", sent, sr.Line)
	}
	sc, err := c.Scale(ctx, 7)
	if err != nil || sc != (control.ScaleResponse{Old: 4, New: 7}) {
		t.Fatalf("Scale = %+v, %v", sc, err)
	}
	_, err = c.Scale(ctx, -2)
	checkAPIError(t, err, 400, "from 0 to 10000")
}

func TestEmptyListsAreArrays(t *testing.T) {
	b := controltest.NewBackend(0)
	srv := controltest.Serve(t, b, controlserver.Options{})
	for _, url := range []string{"/v1/clients", "/v1/workers"} {
		_, _, body := rawDo(t, srv.Addr(), "GET", url, "")
		if strings.TrimSpace(string(body)) != "[]" {
			t.Errorf("GET %s = %s; want []", url, body)
		}
	}
}

// TestStopAnswersFirst holds Backend.Stop until the client has its answer:
// the 202 must not wait for the daemon to stop.
func TestStopAnswersFirst(t *testing.T) {
	b := newFake()
	entered := make(chan struct{})
	release := make(chan struct{})
	b.StopHook = func() {
		close(entered)
		<-release
	}
	srv := controltest.Serve(t, b, controlserver.Options{})
	c := client.New(srv.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if slices.Contains(b.Calls(), "stop") {
		t.Fatal("Backend.Stop finished before the answer arrived")
	}
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("Backend.Stop was not called after the answer")
	}
	close(release)
	select {
	case <-b.Stopped():
	case <-ctx.Done():
		t.Fatal("Backend.Stop did not finish")
	}
	// The fake's Stop cancels the server, as a daemon would: the socket goes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Lstat(srv.Addr()); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("socket file still there 5s after stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunTwice(t *testing.T) {
	path := filepath.Join(controltest.SocketDir(t), "c.sock")
	srv, err := controlserver.New(controlserver.Options{Path: path}, newFake(), logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first Run = %v; want context.Canceled", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file still there after Run: %v", err)
	}
	if err := srv.Run(ctx); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("second Run = %v; want an error", err)
	}
}
