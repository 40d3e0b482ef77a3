package broadcast

import (
	"crypto/ed25519"
	"errors"
	"slices"
	"time"

	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"

	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/sirupsen/logrus"
)

// readFrames reads a signed client's frames until the connection ends:
// on a server that requires it, first the client's AUTH; then maybe a
// RESUME (signedresume.go), then ACKs,
// matched by sequence number, PINGs, answered with PONG, and client
// messages, logged. The first rejected frame is counted and closes the
// client.
func (c *client) readFrames() {
	ss := c.srv.signed
	up := signed.NewUpstreamVerifier(ss.keys, ss.enc.StreamID(), c.session, signed.UpstreamOptions{TimestampWindow: ss.window})
	dec := signed.NewDecoder(up.MaxBody())
	buf := make([]byte, 4096)
	if ss.auth && !c.authenticate(up, dec, buf) {
		return
	}
	r := frameReader{c: c, up: up, limit: newTokenBucket(ss.rate, ss.burst),
		debug: c.log().Logger.IsLevelEnabled(logrus.DebugLevel)}
	var err error
	for {
		// Frames that came with the AUTH are handled before the next read.
		if !r.drain(dec) {
			return
		}
		if err != nil {
			c.readFailed(err)
			return
		}
		c.setIdleDeadline()
		var n int
		n, err = c.conn.Read(buf)
		dec.Feed(buf[:n])
	}
}

// frameReader handles a signed client's frames after authentication.
type frameReader struct {
	c       *client
	up      *signed.UpstreamVerifier
	limit   *tokenBucket // nil: no rate limit
	refused int          // client messages refused over the rate since the last accepted one
	spoke   bool         // a frame was handled: too late for a RESUME
	debug   bool
}

// drain handles every complete frame dec holds. It reports false once
// the client is closed.
func (r *frameReader) drain(dec *signed.Decoder) bool {
	c := r.c
	for {
		f, ok, ferr := dec.Next()
		if ferr != nil {
			c.rejectFrame(ferr)
			return false
		}
		if !ok {
			return true
		}
		if f.Kind == signed.KindResume {
			if !r.resume(f) {
				return false
			}
			continue
		}
		r.spoke = true
		if f.Kind == signed.KindClientMessage && !r.allow() {
			if r.refused >= r.limit.burstSize() {
				c.rateLimited(r.refused)
				return false
			}
			continue
		}
		u, verr := r.up.Verify(f)
		if verr != nil {
			c.rejectFrame(verr)
			return false
		}
		if r.debug {
			c.log().Debugf("<< %s %d", u.Kind, u.Seq)
		}
		switch u.Kind {
		case signed.KindAck:
			c.handleSeqAck(u.Seq)
		case signed.KindPing:
			c.keepAlive(signed.AppendPong(nil, u.Seq))
		case signed.KindClientMessage:
			r.refused = 0
			c.log().WithFields(logrus.Fields{"type": u.Type.String(), "seq": u.Seq, "key": identityOf(u)}).
				Infof("Signed client message: %s", u.Payload)
			if u.Type == message.Request {
				c.respond(&u)
			}
		}
	}
}

// allow takes a token for a client message, or counts its refusal. It is
// asked before the signature is checked, so a flood costs no Ed25519
// verifications.
func (r *frameReader) allow() bool {
	if r.limit == nil || r.limit.allow(time.Now()) {
		return true
	}
	r.refused++
	r.c.srv.rateLimited.Add(1)
	if r.refused == 1 {
		r.c.log().WithField("upstream_rate", r.limit.rate).Warn("Signed client message refused: over the client's rate")
	}
	return false
}

func (c *client) rateLimited(refused int) {
	if c.disconnect(closeRateLimit) {
		c.log().WithField("refused", refused).Warn("Client keeps sending signed messages over its rate, disconnecting")
	}
}

// authenticate sends the CHALLENGE and checks that the client's first
// frame is an AUTH by a key of the server's KeySet, within
// handshakeTimeout. On success the writer may start; on failure the
// client, which has received nothing but the challenge, is counted and
// closed.
func (c *client) authenticate(up *signed.UpstreamVerifier, dec *signed.Decoder, buf []byte) bool {
	ss := c.srv.signed
	deadline := time.Now().Add(handshakeTimeout)
	c.conn.SetDeadline(deadline)
	binding, err := tlsconf.Binding(c.conn)
	if err == nil {
		_, err = c.conn.Write(ss.enc.AppendChallenge(nil, c.session))
	}
	for err == nil {
		f, ok, ferr := dec.Next()
		if ferr != nil {
			c.authFailed(ferr)
			return false
		}
		if ok {
			key, verr := up.VerifyAuth(f, ss.keys, binding)
			if verr != nil {
				c.authFailed(verr)
				return false
			}
			c.conn.SetDeadline(time.Time{})
			c.authenticated(key)
			return true
		}
		var n int
		n, err = c.conn.Read(buf)
		dec.Feed(buf[:n])
		if err != nil && n > 0 {
			err = nil // look at what came with the error first; the next read repeats it
		}
	}
	c.authFailed(err)
	return false
}

// authFailed closes a client that did not authenticate and counts it.
func (c *client) authFailed(err error) {
	if c.disconnect(closeAuth) {
		l := c.log().WithError(err).WithField("remote", c.remote)
		if re, ok := errors.AsType[*signed.RejectError](err); ok {
			l = l.WithField("reason", re.Reason.String())
		}
		l.Warn("Client authentication failed; the client receives nothing")
	}
}

// peerKey is a key a client authenticated with.
type peerKey struct {
	pub         ed25519.PublicKey
	fingerprint string
}

// DropRevoked disconnects the clients that authenticated with a key the
// server's KeySet no longer accepts, such as one removed from the
// authorized-keys file by a reload, and returns how many it closed.
func (s *Server) DropRevoked() int {
	if !s.requiresAuth() {
		return 0
	}
	keys := s.clientKeys()
	s.mu.Lock()
	var revoked []*client
	for _, c := range s.clients {
		if p := c.auth.key.Load(); p != nil && (keys == nil || !keys.Contains(p.pub)) {
			revoked = append(revoked, c)
		}
	}
	s.mu.Unlock()
	n := 0
	for _, c := range revoked {
		if c.disconnect(closeRevoked) {
			n++
			c.log().WithField("key", c.keyFingerprint()).Warn("Key no longer authorized, disconnecting")
		}
	}
	return n
}

// keyFingerprint returns the fingerprint of the client's authenticated
// key, or "".
func (c *client) keyFingerprint() string {
	if p := c.auth.key.Load(); p != nil {
		return p.fingerprint
	}
	return ""
}

// respond answers a client's Request with a RESPONSE signed for this
// connection only, acknowledging its text ("Acknowledge: <text>", as in
// the example of docs/protocol.md).
func (c *client) respond(u *signed.Upstream) {
	payload := append([]byte("Acknowledge: "), u.Payload...)
	if len(payload) > signed.MaxPayload {
		payload = payload[:signed.MaxPayload]
	}
	frame, err := c.srv.signed.enc.AppendResponse(nil, &signed.Response{
		Session: c.session,
		Request: u.Digest,
		Type:    message.Response,
		Time:    time.Now(),
		Payload: payload,
	})
	if err != nil {
		c.log().WithError(err).Error("Cannot sign a response")
		return
	}
	if !c.queueAnswer(frame, false) && c.disconnect(closeSlow) {
		c.log().Warn("Slow consumer: responses not read, disconnecting")
	}
}

// identityOf names the sender of a client message by its fingerprint.
func identityOf(u signed.Upstream) string { return identity.Fingerprint(u.Key) }

// setIdleDeadline arms the idle timeout for the next read of a client
// read by a blocked goroutine, if there is one: only once the client has
// sent a keep-alive (clientReader.spoke).
func (c *client) setIdleDeadline() {
	lim := c.srv.limits.Load()
	if lim.IdleTimeout > 0 && c.r.spoke.Load() && c.reason.Load() == int32(closeNone) && !c.srv.lines.closed.Load() {
		c.conn.SetReadDeadline(time.Now().Add(lim.IdleTimeout))
	}
}

func (c *client) rejectFrame(err error) {
	if c.disconnect(closeRejected) {
		c.log().WithError(err).WithField("reason", signed.ReasonOf(err).String()).
			Warn("Signed frame rejected, disconnecting")
	}
}

// handleSeqAck counts an ACK of message seq (signed and sequenced
// clients): good when it was sent and not acknowledged before (acks are
// cumulative: they may skip messages, never go back).
func (c *client) handleSeqAck(seq uint64) {
	c.acks.mu.Lock()
	defer c.acks.mu.Unlock()
	if seq < c.acks.nextSeq.Load() || seq >= c.w.writingSeq.Load() {
		c.acks.bad.Add(1)
		return
	}
	c.acks.nextSeq.Store(seq + 1)
	c.acks.lastGood.Store(seq)
	c.acks.good.Add(1)
}

// authenticated records that the client proved it holds key (a signed
// or WebSocket client's AUTH): its place among those authenticating is
// freed, and its writer may send.
func (c *client) authenticated(key ed25519.PublicKey) {
	fp := identity.Fingerprint(key)
	c.auth.key.Store(&peerKey{pub: slices.Clone(key), fingerprint: fp})
	c.srv.mu.Lock()
	c.srv.authDoneLocked(c) // its place is free for the next
	c.srv.mu.Unlock()
	c.log().WithField("key", fp).Info("Client authenticated")
	c.auth.done.Store(true)
	c.wakeWriter()
}
