package webfeed_test

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/broadcast"
	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/internal/webfeed"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/gorilla/websocket"
)

// keySet is a KeySet a test changes, as a reload changes the keyring.
type keySet struct {
	mu   sync.Mutex
	keys map[string]bool
}

func (k *keySet) Contains(pub ed25519.PublicKey) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[string(pub)]
}

func (k *keySet) set(pubs ...ed25519.PublicKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = map[string]bool{}
	for _, p := range pubs {
		k.keys[string(p)] = true
	}
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// authFeed is a WebSocket listener that requires authentication by key.
type authFeed struct {
	*feedServer
	daemon ed25519.PrivateKey
	client ed25519.PrivateKey // authorized
	keys   *keySet
}

func startAuthFeed(t *testing.T, lim broadcast.Limits, o webfeed.Options, timeout time.Duration) *authFeed {
	t.Helper()
	a := &authFeed{daemon: newKey(t), client: newKey(t), keys: &keySet{}}
	a.keys.set(a.client.Public().(ed25519.PublicKey))
	a.feedServer = startFeed(t, lim, o, broadcast.WebSocketOptions{}, func(s *broadcast.Server) {
		s.SetStream("s1")
		if err := s.SetWebSocketAuth(broadcast.WebSocketAuth{Key: a.daemon, Keys: a.keys, Timeout: timeout}); err != nil {
			t.Fatal(err)
		}
	})
	return a
}

// authenticate answers c's challenge with key.
func (a *authFeed) authenticate(t *testing.T, c *websocket.Conn, key ed25519.PrivateKey) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := webfeed.Authenticate(c, key, a.daemonPub()); err != nil {
		t.Fatal(err)
	}
}

func (a *authFeed) daemonPub() ed25519.PublicKey { return a.daemon.Public().(ed25519.PublicKey) }

// wantClose reads until the connection ends and checks it was closed
// with 1008 and a reason that holds want.
func wantClose(t *testing.T, c *websocket.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		typ, m, err := c.ReadMessage()
		if err == nil {
			if strings.Contains(string(m), `"challenge"`) {
				continue
			}
			t.Fatalf("message of type %d before the close: %.80q", typ, m)
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, want) {
			t.Fatalf("closed with %v, want 1008 saying %q", err, want)
		}
		return
	}
}

// readChallenge reads the first message, which must be the challenge.
func readChallenge(t *testing.T, c *websocket.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, msg, err := c.ReadMessage()
	if err != nil || typ != websocket.TextMessage || !strings.Contains(string(msg), `"challenge"`) {
		t.Fatalf("first message %.80q (type %d, %v), want the challenge", msg, typ, err)
	}
	return msg
}

func (a *authFeed) waitAuthFailed(t *testing.T, n uint64) {
	t.Helper()
	waitFor(t, "the failure counted", func() bool { return a.bc.Stats().AuthFailed == n })
}

// An authorized key gets the feed, and only once it has answered: the
// challenge is the first message, lines published meanwhile follow the
// answer, after the preamble asked for.
func TestAuthGoodKey(t *testing.T) {
	a := startAuthFeed(t, testLimits(), webfeed.Options{}, 0)
	c := a.dial(t, "from=next", nil)
	a.waitClients(t, 1)
	a.bc.Publish([][]byte{[]byte("early")})
	msg := readChallenge(t, c)
	var ch struct{ Challenge, Identity, Key, Session, Binding string }
	if err := json.Unmarshal(msg, &ch); err != nil || ch.Challenge == "" || ch.Session == "" || ch.Binding != "none" {
		t.Fatalf("first message is no challenge: %q (%v)", msg, err)
	}
	if ch.Key != base64.StdEncoding.EncodeToString(a.daemonPub()) {
		t.Errorf("challenge names key %s, not the daemon's", ch.Key)
	}
	answer, err := webfeed.AnswerChallenge(msg, a.client, a.daemonPub(), signed.Binding{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(websocket.TextMessage, answer); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c); got != `{"stream":"s1","first":1}`+"\n" {
		t.Fatalf("preamble %q", got)
	}
	if got := readText(t, c); got != "early" {
		t.Fatalf("line %q, want early", got)
	}
	waitFor(t, "authenticated", func() bool { return a.bc.Stats().Authenticating == 0 })
	a.bc.Publish([][]byte{[]byte("late")})
	if got := readText(t, c); got != "late" {
		t.Fatalf("line %q, want late", got)
	}
	if n := a.bc.Stats().AuthFailed; n != 0 {
		t.Errorf("%d failures counted", n)
	}
	// The challenge must verify with the daemon's key.
	if _, err := webfeed.AnswerChallenge(msg, a.client, newKey(t).Public().(ed25519.PublicKey), signed.Binding{}); err == nil {
		t.Error("a challenge verified with another daemon's key")
	}
}

// A key not authorized is closed with 1008, sent no line, and counted.
func TestAuthUnknownKey(t *testing.T) {
	a := startAuthFeed(t, testLimits(), webfeed.Options{}, 0)
	c := a.dial(t, "", nil)
	a.waitClients(t, 1)
	a.bc.Publish([][]byte{[]byte("secret")})
	a.authenticate(t, c, newKey(t))
	wantClose(t, c, "key not authorized")
	a.waitAuthFailed(t, 1)
}

// An AUTH whose signature was tampered with is refused.
func TestAuthBadSignature(t *testing.T) {
	a := startAuthFeed(t, testLimits(), webfeed.Options{}, 0)
	c := a.dial(t, "", nil)
	msg := readChallenge(t, c)
	answer, err := webfeed.AnswerChallenge(msg, a.client, a.daemonPub(), signed.Binding{})
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Auth string }
	json.Unmarshal(answer, &m)
	frame, _ := base64.StdEncoding.DecodeString(m.Auth)
	frame[len(frame)-1] ^= 1
	answer, _ = json.Marshal(map[string]string{"auth": base64.StdEncoding.EncodeToString(frame)})
	c.WriteMessage(websocket.TextMessage, answer)
	wantClose(t, c, "signature does not verify")
	a.waitAuthFailed(t, 1)
}

// An answer is good for its own connection only: one made for another
// connection's challenge, or for no TLS on a TLS connection, is refused.
func TestAuthBoundToTheConnection(t *testing.T) {
	t.Run("another connection's challenge", func(t *testing.T) {
		a := startAuthFeed(t, testLimits(), webfeed.Options{}, 0)
		c1, c2 := a.dial(t, "", nil), a.dial(t, "", nil)
		msg1 := readChallenge(t, c1)
		readChallenge(t, c2)
		answer, err := webfeed.AnswerChallenge(msg1, a.client, a.daemonPub(), signed.Binding{})
		if err != nil {
			t.Fatal(err)
		}
		c2.WriteMessage(websocket.TextMessage, answer) // replayed on c2
		wantClose(t, c2, "signature does not verify")
		a.waitAuthFailed(t, 1)
		c1.WriteMessage(websocket.TextMessage, answer) // still good on its own
		a.bc.Publish([][]byte{[]byte("one")})
		if got := readText(t, c1); got != "one" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("TLS exporter", func(t *testing.T) {
		cert, err := tlsconf.SelfSigned(newKey(t), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		a := startAuthFeed(t, testLimits(), webfeed.Options{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}}, 0)
		d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: 5 * time.Second}
		dial := func() *websocket.Conn {
			c, resp, err := d.Dial("wss://"+a.addr+webfeed.PathFeed, nil)
			if err != nil {
				t.Fatalf("dial: %v (%s)", err, body(resp))
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		c := dial()
		msg := readChallenge(t, c)
		if !strings.Contains(string(msg), `"binding":"tls-exporter"`) {
			t.Errorf("challenge over TLS: %s", msg)
		}
		answer, err := webfeed.AnswerChallenge(msg, a.client, a.daemonPub(), signed.Binding{}) // not this connection's binding
		if err != nil {
			t.Fatal(err)
		}
		c.WriteMessage(websocket.TextMessage, answer)
		wantClose(t, c, "signature does not verify")
		a.waitAuthFailed(t, 1)

		c = dial()
		a.authenticate(t, c, a.client)
		waitFor(t, "authenticated", func() bool { return a.bc.Stats().Connected == 1 && a.bc.Stats().Authenticating == 0 })
		a.bc.Publish([][]byte{[]byte("over TLS")})
		if got := readText(t, c); got != "over TLS" {
			t.Fatalf("got %q", got)
		}
	})
}

// A client that does not answer within the timeout is closed; one that
// answers with something else than an AUTH too.
func TestAuthTimeoutAndGarbage(t *testing.T) {
	a := startAuthFeed(t, testLimits(), webfeed.Options{}, 300*time.Millisecond)
	c := a.dial(t, "", nil)
	readChallenge(t, c)
	wantClose(t, c, "no answer within")
	a.waitAuthFailed(t, 1)

	// The default timeout for the garbage, so that a slow machine closes
	// it for what it sent, not for being late.
	g := startAuthFeed(t, testLimits(), webfeed.Options{}, 0)
	c = g.dial(t, "", nil)
	c.WriteMessage(websocket.TextMessage, []byte(`{"auth":"not base64!"}`))
	wantClose(t, c, "base64")
	g.waitAuthFailed(t, 1)

	c = g.dial(t, "", nil)
	c.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
	wantClose(t, c, "one text message")
	g.waitAuthFailed(t, 2)
}

// A client whose key is removed is closed once the server is told
// (DropRevoked, as chattyd's reload does); others stay.
func TestAuthRevokedOnReload(t *testing.T) {
	a := startAuthFeed(t, testLimits(), webfeed.Options{}, 0)
	other := newKey(t)
	a.keys.set(a.client.Public().(ed25519.PublicKey), other.Public().(ed25519.PublicKey))
	c1, c2 := a.dial(t, "", nil), a.dial(t, "", nil)
	a.authenticate(t, c1, a.client)
	a.authenticate(t, c2, other)
	waitFor(t, "both authenticated", func() bool { return a.bc.Stats().Connected == 2 && a.bc.Stats().Authenticating == 0 })
	if n := a.bc.DropRevoked(); n != 0 {
		t.Fatalf("DropRevoked closed %d before any change", n)
	}
	a.keys.set(other.Public().(ed25519.PublicKey))
	if n := a.bc.DropRevoked(); n != 1 {
		t.Fatalf("DropRevoked closed %d, want 1", n)
	}
	wantClose(t, c1, "key no longer authorized")
	a.bc.Publish([][]byte{[]byte("still here")})
	if got := readText(t, c2); got != "still here" {
		t.Fatalf("got %q", got)
	}
	// And a new connection with the revoked key is refused.
	c3 := a.dial(t, "", nil)
	a.authenticate(t, c3, a.client)
	wantClose(t, c3, "key not authorized")
}

// Connections yet to authenticate are bounded: one over
// MaxUnauthenticated is closed at once, sent nothing, and counted.
func TestAuthMaxUnauthenticated(t *testing.T) {
	lim := testLimits()
	lim.MaxUnauthenticated = 1
	a := startAuthFeed(t, lim, webfeed.Options{}, 0)
	pending := a.dial(t, "", nil)
	a.waitClients(t, 1)
	over := a.dial(t, "", nil)
	over.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, m, err := over.ReadMessage(); err == nil {
		t.Fatalf("a connection over max_unauthenticated was sent %q", m)
	}
	waitFor(t, "the refusal counted", func() bool { return a.bc.Stats().UnauthenticatedRefused == 1 })
	a.authenticate(t, pending, a.client)
	waitFor(t, "authenticated", func() bool { return a.bc.Stats().Authenticating == 0 })
	next := a.dial(t, "", nil) // the place is free again
	a.authenticate(t, next, a.client)
	waitFor(t, "two in", func() bool { return a.bc.Stats().Connected == 2 && a.bc.Stats().Authenticating == 0 })
}
