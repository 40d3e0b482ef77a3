package webfeed

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/gorilla/websocket"
)

// The client side of the WebSocket listener's authentication by key
// (broadcast.websocket.auth: authorized_keys; docs/protocol.md,
// "Authentication by key"), for programs: a browser holds no key of the
// authorized keys, nor can it read the TLS exporter the answer is bound
// to.

// AnswerChallenge returns the answer to msg, the challenge message a
// listener that requires authentication sends first: it checks that the
// challenge is signed by daemon, the daemon's identity, and signs it with
// key for the connection whose channel binding is binding (tlsconf.Binding
// of the client's connection; zero without TLS).
func AnswerChallenge(msg []byte, key ed25519.PrivateKey, daemon ed25519.PublicKey, binding signed.Binding) ([]byte, error) {
	var m struct {
		Challenge string `json:"challenge"`
	}
	if err := json.Unmarshal(msg, &m); err != nil || m.Challenge == "" {
		return nil, fmt.Errorf("not a challenge: %.80q", msg)
	}
	frame, err := base64.StdEncoding.DecodeString(m.Challenge)
	if err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	v, err := signed.NewVerifier(daemon, signed.VerifierOptions{})
	if err != nil {
		return nil, err
	}
	if err := v.Feed(frame, func(*signed.Message) {}); err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	ch, ok := v.Challenge()
	if !ok {
		return nil, errors.New("challenge: no CHALLENGE frame in it")
	}
	auth, err := signed.AppendAuth(nil, key, ch, binding, time.Now())
	if err != nil {
		return nil, err
	}
	return json.Marshal(struct {
		Auth string `json:"auth"`
	}{base64.StdEncoding.EncodeToString(auth)})
}

// Authenticate answers the challenge on a WebSocket just opened to the
// listener with key; daemon is the daemon's identity. Once it returns nil
// the feed follows (its preamble first, when asked for with ?from=).
func Authenticate(ws *websocket.Conn, key ed25519.PrivateKey, daemon ed25519.PublicKey) error {
	typ, msg, err := ws.ReadMessage()
	if err != nil {
		return fmt.Errorf("read the challenge: %w", err)
	}
	if typ != websocket.TextMessage {
		return errors.New("the first message is not a text message: does the listener require authentication?")
	}
	binding, err := tlsconf.Binding(ws.NetConn())
	if err != nil {
		return err
	}
	answer, err := AnswerChallenge(msg, key, daemon, binding)
	if err != nil {
		return err
	}
	return ws.WriteMessage(websocket.TextMessage, answer)
}
