package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus/hooks/test"
)

// The WebSocket listener is one of the daemon's: its client gets the feed
// with the stream's numbers (from=first), counts in status per listener,
// and the status it serves is the control socket's.
func TestInProcessWebSocketListener(t *testing.T) {
	cfg := config.Default()
	cfg.Broadcast.WebSocket.Listen = "127.0.0.1:0"
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	p.src.lines <- []byte("before the client")
	st, err := p.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var addr string
	for _, l := range st.Listeners {
		if l.Name == control.ListenerWebSocket {
			addr = l.Addr
			if l.Protocol != "websocket" {
				t.Errorf("protocol %q", l.Protocol)
			}
		}
	}
	if addr == "" {
		t.Fatalf("status lists no %s: %+v", control.ListenerWebSocket, st.Listeners)
	}
	waitUntil(t, "the line read", func() bool { return p.d.feedLines.Load() == 1 })
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/v1/feed?from=first", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.src.lines <- []byte("after")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, want := range []string{`{"stream":"` + st.Stream.ID + `","first":1}` + "\n", "before the client", "after"} {
		if _, m, err := c.ReadMessage(); err != nil || string(m) != want {
			t.Fatalf("message %q, %v; want %q", m, err, want)
		}
	}
	st, err = p.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Listeners {
		if want := map[bool]int{true: 1, false: 0}[l.Name == control.ListenerWebSocket]; l.Clients != want {
			t.Errorf("listener %s has %d clients, want %d", l.Name, l.Clients, want)
		}
	}
	if st.Clients.Connected != 1 {
		t.Errorf("status counts %d clients, want the WebSocket one", st.Clients.Connected)
	}
}

// A token file others may read stops chattyd from starting, naming the
// file and the fix; a missing one names the setting.
func TestWebSocketTokenFileChecked(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.token")
	if err := os.WriteFile(open, []byte("0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o644)
	for _, tc := range []struct{ file, want string }{
		{open, "chmod 600 " + open},
		{filepath.Join(dir, "missing"), "broadcast.websocket.token_file"},
	} {
		cfg := config.Default()
		cfg.Broadcast.Listen = "127.0.0.1:0"
		cfg.Broadcast.WebSocket.Listen = "127.0.0.1:0"
		cfg.Broadcast.WebSocket.TokenFile = tc.file
		cfg.Control.Socket = filepath.Join(t.TempDir(), "control.sock")
		cfg.Pool.Size = 0
		logger, _ := test.NewNullLogger()
		_, err := New(Options{Config: cfg, Logger: logger, Feed: newHeldSource(false), NoSignals: true})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("token file %s: %v, want an error naming %q", tc.file, err, tc.want)
		}
	}
}
