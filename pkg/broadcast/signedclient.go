package broadcast

import (
	"time"

	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"

	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/sirupsen/logrus"
)

// readFrames reads a signed client's frames until the connection ends:
// ACKs are matched by sequence number, PINGs answered with PONG, client
// messages logged. The first rejected frame is counted and closes the
// client.
func (c *client) readFrames() {
	ss := c.srv.signed
	up := signed.NewUpstreamVerifier(ss.keys, ss.enc.StreamID(), c.session, signed.UpstreamOptions{TimestampWindow: ss.window})
	dec := signed.NewDecoder(up.MaxBody())
	buf := make([]byte, 4096)
	debug := c.log().Logger.IsLevelEnabled(logrus.DebugLevel)
	for {
		c.setIdleDeadline()
		n, err := c.conn.Read(buf)
		dec.Feed(buf[:n])
		for {
			f, ok, ferr := dec.Next()
			if ferr != nil {
				c.rejectFrame(ferr)
				return
			}
			if !ok {
				break
			}
			u, verr := up.Verify(f)
			if verr != nil {
				c.rejectFrame(verr)
				return
			}
			if debug {
				c.log().Debugf("<< %s %d", u.Kind, u.Seq)
			}
			switch u.Kind {
			case signed.KindAck:
				c.handleSeqAck(u.Seq)
			case signed.KindPing:
				c.keepAlive(signed.AppendPong(nil, u.Seq))
			case signed.KindClientMessage:
				c.log().WithFields(logrus.Fields{"type": u.Type.String(), "seq": u.Seq, "key": identityOf(u)}).
					Infof("Signed client message: %s", u.Payload)
				if u.Type == message.Request {
					c.respond(&u)
				}
			}
		}
		if err != nil {
			c.readFailed(err)
			return
		}
	}
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
	if !c.queueAnswer(frame, false) && c.shut(closeSlow) {
		c.srv.slow.Add(1)
		c.log().Warn("Slow consumer: responses not read, disconnecting")
	}
}

// identityOf names the sender of a client message by its fingerprint.
func identityOf(u signed.Upstream) string { return identity.Fingerprint(u.Key) }

// setIdleDeadline arms the idle timeout for the next read, if there is one.
func (c *client) setIdleDeadline() {
	lim := c.srv.limits.Load()
	if lim.IdleTimeout > 0 && c.reason.Load() == int32(closeNone) && !c.srv.lines.closed.Load() {
		c.conn.SetReadDeadline(time.Now().Add(lim.IdleTimeout))
	}
}

func (c *client) rejectFrame(err error) {
	if c.shut(closeRejected) {
		c.srv.rejected.Add(1)
		c.log().WithError(err).WithField("reason", signed.ReasonOf(err).String()).
			Warn("Signed frame rejected, disconnecting")
	}
}

// handleSeqAck counts an ACK of message seq: good when it was sent and not
// acknowledged before (acks may skip messages, never go back).
func (c *client) handleSeqAck(seq uint64) {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	if seq < c.ackedSeq.Load() || seq >= c.writingSeq.Load() {
		c.acksBad.Add(1)
		return
	}
	c.ackedSeq.Store(seq + 1)
	c.acksGood.Add(1)
}
