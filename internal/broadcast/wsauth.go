package broadcast

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// Client authentication on the WebSocket listener (docs/protocol.md,
// "Authentication by key"): the signed protocol's CHALLENGE and AUTH,
// each carried base64 in a JSON text message. Before anything of the
// feed, the server sends the challenge, signed with its identity, for a
// random session of this connection; the client answers with an AUTH
// frame signed by a key of the KeySet over the stream, the session and
// the connection's channel binding (the TLS exporter on TLS). Only then
// is it sent its preamble and the feed. A client that fails is closed
// with 1008 and the reason, counted, and logged at most once a second.

// WebSocketAuth makes a server of WebSocket clients require that each
// client prove it holds a key of Keys before it is sent anything.
type WebSocketAuth struct {
	// Key is the daemon's identity, which signs the challenges.
	Key ed25519.PrivateKey
	// Keys are the client keys accepted; asked at every authentication,
	// so a keyring changed by a reload applies to the next one
	// (DropRevoked closes the clients already in).
	Keys signed.KeySet
	// TimestampWindow is how far an AUTH's time may be from now; 0
	// means signed.DefaultTimestampWindow.
	TimestampWindow time.Duration
	// Timeout bounds the whole exchange; 0 means 10 seconds.
	Timeout time.Duration
}

// wsAuth is a WebSocket server's authentication.
type wsAuth struct {
	enc     *signed.Encoder // only AppendChallenge and StreamID: safe for any goroutine
	pub     ed25519.PublicKey
	keys    signed.KeySet
	window  time.Duration
	timeout time.Duration
	log     logLimiter // authentication failures
}

// wsAuthMaxMessage bounds the client's answer: an AUTH frame in base64
// is about 150 bytes.
const wsAuthMaxMessage = 1024

// SetWebSocketAuth makes a server made by NewWebSocket require
// authentication. It must be called before Run.
func (s *Server) SetWebSocketAuth(a WebSocketAuth) error {
	if s.ws == nil {
		return errors.New("broadcast: SetWebSocketAuth on a server that is not of WebSocket clients")
	}
	if a.Keys == nil {
		return errors.New("broadcast: WebSocket authentication without keys")
	}
	enc, err := signed.NewEncoder(a.Key, signed.PerMessage, signed.EncoderOptions{})
	if err != nil {
		return fmt.Errorf("WebSocket authentication: %w", err)
	}
	if a.Timeout <= 0 {
		a.Timeout = handshakeTimeout
	}
	s.ws.auth = &wsAuth{enc: enc, pub: a.Key.Public().(ed25519.PublicKey), keys: a.Keys,
		window: a.TimestampWindow, timeout: a.Timeout}
	return nil
}

// requiresAuth reports whether the server's clients must authenticate
// before they are sent anything.
func (s *Server) requiresAuth() bool {
	return (s.signed != nil && s.signed.auth) || (s.ws != nil && s.ws.auth != nil)
}

// clientKeys returns the keys a server that requires authentication
// accepts.
func (s *Server) clientKeys() signed.KeySet {
	if s.ws != nil && s.ws.auth != nil {
		return s.ws.auth.keys
	}
	return s.signed.keys
}

// newWSSession draws a WebSocket client's random session, the nonce its
// AUTH signs.
func newWSSession() (signed.Session, error) {
	var s signed.Session
	_, err := rand.Read(s[:])
	return s, err
}

// wsChallengeMessage is the challenge's JSON text message, ended by a
// newline as the server's other messages.
func (a *wsAuth) challengeMessage(session signed.Session, binding string) []byte {
	frame := a.enc.AppendChallenge(nil, session)
	b := []byte(`{"challenge":`)
	b = strconv.AppendQuote(b, base64.StdEncoding.EncodeToString(frame))
	b = strconv.AppendQuote(append(b, `,"identity":`...), identity.Fingerprint(a.pub))
	b = strconv.AppendQuote(append(b, `,"key":`...), base64.StdEncoding.EncodeToString(a.pub))
	b = strconv.AppendQuote(append(b, `,"session":`...), session.String())
	b = strconv.AppendQuote(append(b, `,"binding":`...), binding)
	return append(b, "}\n"...)
}

// wsAuthRead runs a WebSocket client's reader on a server that requires
// authentication: the exchange, then, whatever its outcome, the reader
// as any client's (a client that failed is being closed: what it sends
// is dropped until it has its close frame).
func (c *client) wsAuthRead() {
	if !c.wsAuthenticate() {
		c.r.ws.discard = true
	}
	c.conn.SetReadDeadline(time.Time{})
	if c.raw != nil {
		c.pollRead()
		return
	}
	c.readRun()
}

// wsAuthenticate sends the challenge and checks the client's answer,
// within the timeout. On success the writer may start; on failure the
// client, which has received nothing but the challenge, is counted and
// being closed.
func (c *client) wsAuthenticate() bool {
	a := c.srv.ws.auth
	deadline := time.Now().Add(a.timeout)
	c.conn.SetReadDeadline(deadline)
	c.conn.SetWriteDeadline(deadline)
	binding, err := tlsconf.Binding(c.conn)
	if err != nil {
		c.wsAuthFailed("no channel binding", err)
		return false
	}
	kind := "none"
	if binding != (signed.Binding{}) {
		kind = "tls-exporter"
	}
	if _, err := c.conn.Write(appendWSFrame(nil, wsText, a.challengeMessage(c.session, kind))); err != nil {
		c.wsAuthFailed("challenge not sent", err)
		return false
	}
	payload, err := readWSMessage(c.conn, wsAuthMaxMessage)
	if err != nil {
		why := "no answer"
		if we, ok := errors.AsType[*wsError](err); ok {
			why = we.reason
		} else if errors.Is(err, errWSAnswer) {
			why = err.Error()
		} else if isTimeout(err) {
			why = "no answer within " + a.timeout.String()
		}
		c.wsAuthFailed(why, err)
		return false
	}
	frame, err := parseWSAuth(payload)
	if err != nil {
		c.wsAuthFailed(err.Error(), err)
		return false
	}
	up := signed.NewUpstreamVerifier(a.keys, a.enc.StreamID(), c.session, signed.UpstreamOptions{TimestampWindow: a.window})
	key, err := up.VerifyAuth(frame, a.keys, binding)
	if err != nil {
		why := "authentication failed"
		if re, ok := errors.AsType[*signed.RejectError](err); ok {
			switch re.Reason {
			case signed.ReasonUnauthorized:
				why = "key not authorized"
			case signed.ReasonBadSignature:
				why = "signature does not verify (another connection's challenge?)"
			default:
				why = re.Reason.String()
			}
		}
		c.wsAuthFailed(why, err)
		return false
	}
	c.conn.SetWriteDeadline(time.Time{})
	c.authenticated(key)
	return true
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// wsAuthFailed closes a client that did not authenticate, with 1008 and
// why, and counts it; it is logged at most once a second.
func (c *client) wsAuthFailed(why string, err error) {
	if !c.closeWS(closeAuth, wsPolicy, "authentication failed: "+why) {
		return
	}
	n := c.srv.authFailed.Load()
	if c.srv.ws.auth.log.allow() {
		c.log().WithError(err).WithField("remote", c.remote).WithField("auth_failed_total", n).
			Warn("WebSocket client authentication failed (" + why + "); the client receives nothing")
	}
	c.wakeWriter()
}

// errWSAnswer is wrapped by the errors of an answer that is not one
// text message.
var errWSAnswer = errors.New("the answer must be one text message")

// readWSMessage reads the client's next text message, whole in one frame
// of at most max bytes, reading not a byte past it: what follows is the
// reader's. Pings and pongs before it are passed over.
func readWSMessage(r io.Reader, max int) ([]byte, error) {
	buf := make([]byte, max+14)
	for {
		f, err := readWSFrame(r, buf, max)
		if err != nil {
			return nil, err
		}
		switch {
		case f.opcode == wsPing || f.opcode == wsPong:
		case f.opcode == wsClose:
			return nil, fmt.Errorf("%w: the client closed the connection", errWSAnswer)
		case f.opcode != wsText || !f.fin:
			return nil, errWSAnswer
		default:
			return f.payload, nil
		}
	}
}

// readWSFrame reads one client frame of at most max bytes into buf, and
// not a byte more.
func readWSFrame(r io.Reader, buf []byte, max int) (wsFrame, error) {
	have, want := 0, 2
	for {
		n, err := io.ReadFull(r, buf[have:want])
		have += n
		if err != nil {
			return wsFrame{}, err
		}
		f, used, err := parseWSFrame(buf[:have], max)
		if err != nil || used > 0 {
			return f, err
		}
		want = wsFrameSize(buf[:have])
	}
}

// wsFrameSize returns how many bytes the frame whose first bytes p holds
// takes, as far as they tell: its header's length, then the whole
// frame's. parseWSFrame has checked the size against its bound.
func wsFrameSize(p []byte) int {
	size, hdr := uint64(p[1]&0x7f), 2
	switch size {
	case 126:
		if len(p) < 4 {
			return 4
		}
		size, hdr = uint64(binary.BigEndian.Uint16(p[2:])), 4
	case 127:
		if len(p) < 10 {
			return 10
		}
		size, hdr = binary.BigEndian.Uint64(p[2:]), 10
	}
	return hdr + 4 + int(size)
}

// parseWSAuth parses a client's answer to the challenge,
// {"auth":"BASE64"}, into the signed AUTH frame it carries (its body
// aliases a buffer of its own). The frame is not verified.
func parseWSAuth(msg []byte) (signed.Frame, error) {
	var m struct {
		Auth *string `json:"auth"`
	}
	d := json.NewDecoder(bytes.NewReader(msg))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil || m.Auth == nil || d.More() {
		return signed.Frame{}, errors.New(`the answer is not {"auth": BASE64 of an AUTH frame}`)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(*m.Auth)
	if err != nil {
		return signed.Frame{}, errors.New("auth is not standard base64")
	}
	dec := signed.NewDecoder(256) // an AUTH body is 104 bytes
	dec.Feed(raw)
	f, ok, err := dec.Next()
	switch {
	case err != nil:
		return signed.Frame{}, fmt.Errorf("auth is not a signed frame: %w", err)
	case !ok:
		return signed.Frame{}, errors.New("auth holds part of a frame")
	case dec.Buffered() != 0:
		return signed.Frame{}, errors.New("auth holds more than one frame")
	}
	return f, nil
}
