package daemon

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/webfeed"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/gorilla/websocket"
)

// With broadcast.websocket.auth: authorized_keys, a client answers the
// challenge signed with the identity with a key of
// identity.authorized_keys, then gets the feed; a reload that removes
// the key closes it with 1008.
func TestWebSocketAuthorizedKeys(t *testing.T) {
	dir := t.TempDir()
	_, client, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(keys, []byte(identity.AuthorizedKeyLine(client.Public().(ed25519.PublicKey), "test")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Identity = config.Identity{KeyFile: filepath.Join(dir, "identity.key"), Generate: true, AuthorizedKeys: keys}
	cfg.Broadcast.WebSocket.Listen = "127.0.0.1:0"
	cfg.Broadcast.WebSocket.Auth = config.AuthAuthorizedKeys
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	var addr string
	for _, l := range p.d.listeners.entries {
		if l.name == control.ListenerWebSocket {
			addr = l.addr.String()
		}
	}
	daemonKey, err := identity.LoadPublicKey(identity.PublicPath(cfg.Identity.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/v1/feed", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := webfeed.Authenticate(c, client, daemonKey); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "authenticated", func() bool {
		st := p.d.listeners.webWS.Stats()
		return st.Connected == 1 && st.Authenticating == 0
	})
	p.src.lines <- []byte("for the key's holder")
	if _, m, err := c.ReadMessage(); err != nil || string(m) != "for the key's holder" {
		t.Fatalf("message %q, %v", m, err)
	}

	if err := os.WriteFile(keys, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p.d.listeners.reloadAuthorizedKeys(keys)
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "no longer authorized") {
		t.Fatalf("after the reload: %v, want 1008", err)
	}
}
