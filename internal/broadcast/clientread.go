package broadcast

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/chatty-dev/chatty/pkg/wire"
	"github.com/sirupsen/logrus"
)

// handshake completes a TLS client's handshake (and client authentication)
// before anything is read; it reports whether the client may go on. Until
// it succeeds the writer, whose first write waits for the same handshake,
// sends nothing.
func (c *client) handshake() bool {
	tc, ok := c.conn.(*tls.Conn)
	if !ok {
		return true
	}
	tc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		c.handshakeFailed(err)
		return false
	}
	tc.SetReadDeadline(time.Time{}) // readLoop sets the idle deadline, if any
	return true
}

// initialReadBuffer is the size of a client's first read buffer: room
// for a few acks or keep-alives.
const initialReadBuffer = 128

// handshakeFailed closes a TLS client whose handshake (or client
// authentication) failed, and counts it once, whether the reader or the
// writer saw the failure first.
func (c *client) handshakeFailed(err error) {
	if c.disconnect(closeHandshake) {
		c.log().WithError(err).Warn("TLS handshake failed; the client receives nothing")
	}
}

// handshakeComplete reports whether the connection is plain TCP or a TLS
// connection whose handshake succeeded.
func (c *client) handshakeComplete() bool {
	tc, ok := c.conn.(*tls.Conn)
	return !ok || tc.ConnectionState().HandshakeComplete
}

// readLoop reads client lines until the connection ends.
func (c *client) readLoop() {
	if !c.handshake() {
		return
	}
	if c.srv.signed != nil {
		c.readFrames()
		return
	}
	// The buffer starts small, so that an idle client costs little, and
	// doubles when a read fills it, up to a line of MaxClientLine: a client
	// sending acks at full speed soon reads them in large batches.
	buf := make([]byte, initialReadBuffer)
	start, end := 0, 0
	grow := false
	debug := c.srv.logger.Logger.IsLevelEnabled(logrus.DebugLevel)
	for {
		lim := c.srv.limits.Load() // reload may change them
		if start > 0 {
			end = copy(buf, buf[start:end])
			start = 0
		}
		if need := c.maxInput(lim); (grow || end == len(buf)) && len(buf) < need {
			nb := make([]byte, min(2*len(buf), need))
			end = copy(nb, buf[:end])
			buf = nb
		}
		c.setIdleDeadline()
		n, err := c.conn.Read(buf[end:])
		grow = n > 0 && end+n == len(buf)
		end += n
		used, ok := c.handleInput(buf[start:end], lim, debug)
		if !ok {
			return
		}
		start += used
		if err != nil {
			c.readFailed(err)
			return
		}
	}
}

// handleInput handles what a text or WebSocket client sent (handleLines,
// handleFrames).
func (c *client) handleInput(p []byte, lim *Limits, debug bool) (used int, ok bool) {
	if c.srv.ws != nil {
		return c.handleFrames(p, lim, debug)
	}
	return c.handleLines(p, lim, debug)
}

// maxInput returns the most bytes a client's read buffer needs: the
// longest line with its "\r\n", or the longest frame.
func (c *client) maxInput(lim *Limits) int {
	if c.srv.ws != nil {
		return maxFrameBytes(lim)
	}
	return lim.MaxClientLine + 2
}

// handleLines handles every complete line of p, a text client's bytes,
// and returns how many bytes they took; the rest is an incomplete line. It
// reports false, having closed the client, for a line longer than
// lim.MaxClientLine, complete or not, or one unknown line too many.
func (c *client) handleLines(p []byte, lim *Limits, debug bool) (used int, ok bool) {
	max := lim.MaxClientLine
	for {
		i := bytes.IndexByte(p[used:], '\n')
		if i < 0 {
			break
		}
		line := wire.TrimCR(p[used : used+i])
		if len(line) > max {
			c.lineTooLong(max)
			return used, false
		}
		if !c.handleLine(line, lim.MaxUnknownLines, debug) {
			return used, false
		}
		used += i + 1
	}
	if len(p)-used > max+1 { // "+1": room for a "\r"
		c.lineTooLong(max)
		return used, false
	}
	return used, true
}

func (c *client) lineTooLong(max int) {
	if c.disconnect(closeProtocol) {
		c.log().WithField("max_client_line", max).Warn("Client line too long, disconnecting")
	}
}

func (c *client) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		// The original server treated end of input as the client leaving,
		// and so do we: a worker that exits is gone at once, not at the
		// next write. Listen-only clients must not half-close
		// (ncat --recv-only, chattyctl watch). The writer first answers
		// the keep-alives already received, then closes.
		c.peerEOF.Store(true)
		c.wakeWriterFromReader()
	case errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded):
		if !c.srv.lines.closed.Load() {
			c.disconnect(closeIdle)
		}
		c.disconnect(closeDrained)
	default:
		c.fail(err)
	}
}

func (c *client) fail(err error) {
	if c.disconnect(closeError) {
		c.log().WithError(err).Debug("Connection failed")
	}
}

// handleLine handles one line of a text client. It reports false when
// the line closed the client: one unknown line more than maxUnknown.
func (c *client) handleLine(line []byte, maxUnknown int, debug bool) bool {
	if debug {
		c.log().Debugf("<< %s", line)
	}
	if c.srv.sequenced {
		return c.handleSeqLine(line, maxUnknown)
	}
	switch kind, n := wire.ParseClientLine(line); kind {
	case wire.KeepAliveLine:
		c.keepAlive(keepAliveAck)
	case wire.Ack:
		c.handleAck(n)
	default:
		return c.unknownLine(line, maxUnknown)
	}
	return true
}

// handleSeqLine handles one line of a sequenced client: a cumulative
// ACK <seq>, or a keep-alive.
func (c *client) handleSeqLine(line []byte, maxUnknown int) bool {
	if seq, ok := wire.ParseSeqAck(line); ok {
		c.handleSeqAck(seq)
		return true
	}
	if string(wire.TrimCR(line)) == wire.KeepAlive {
		c.keepAlive(keepAliveAck)
		return true
	}
	return c.unknownLine(line, maxUnknown)
}

// maxLoggedLine is how much of an unknown client line is logged.
const maxLoggedLine = 80

// unknownLine counts a line that is neither an ack nor a keep-alive, logs
// the client's first (at most one a second over all clients, so that a
// flood of garbage clients is no flood of log lines), and disconnects a
// client that sends more than max of them (0: no limit). It reports
// false when it closed the client.
func (c *client) unknownLine(line []byte, max int) bool {
	n := c.r.unknown.Load() + 1
	c.r.unknown.Store(n)
	if n == 1 && c.srv.unknownLog.allow() {
		c.log().WithField("line", string(line[:min(len(line), maxLoggedLine)])).
			Warn("Client line is neither an ack nor a keep-alive; counting and ignoring such lines")
	}
	if max <= 0 || n <= uint64(max) {
		return true
	}
	if c.disconnect(closeUnknown) {
		c.log().WithField("unknown_lines", n).WithField("max_unknown_lines", max).
			Warn("Client sent too many lines that are neither acks nor keep-alives, disconnecting")
	}
	return false
}

// handleAck matches an ack against the oldest unacknowledged line.
func (c *client) handleAck(n int64) {
	c.acks.mu.Lock()
	defer c.acks.mu.Unlock()
	sent := c.w.writingSeq.Load()
	for {
		if c.acks.next.seq >= sent {
			c.acks.bad.Add(1) // acknowledges a line never sent
			return
		}
		cur := c.acks.next
		if end, _ := cur.c.published(); cur.off >= end {
			// The line is in a later chunk: the chunk is full and next set.
			nxt := cur.c.next.Load()
			if nxt == nil {
				c.acks.bad.Add(1)
				return
			}
			c.acks.next = cursor{c: nxt, seq: nxt.firstSeq}
			continue
		}
		line := cur.c.lineAt(cur.off)
		c.acks.next = cursor{c: cur.c, off: cur.off + len(line) + 1, seq: cur.seq + 1}
		c.acks.nextSeq.Store(c.acks.next.seq)
		// The original worker never acknowledges a line that reads exactly
		// like the keep-alive answer, so such a feed line expects no ack.
		if string(line) == wire.KeepAliveAck {
			continue
		}
		if int64(len(line)) == n {
			c.acks.lastGood.Store(cur.seq)
			c.acks.good.Add(1)
		} else {
			c.acks.bad.Add(1)
		}
		return
	}
}

// keepAlive queues the answer to a keep-alive, or disconnects a client that
// sends keep-alives but does not read the answers.
func (c *client) keepAlive(answer []byte) {
	c.r.spoke.Store(true)
	if c.queueAnswer(answer, true) {
		return
	}
	if c.disconnect(closeSlow) {
		c.log().WithField("unanswered_keepalives", maxPendingKeepAlives).
			Warn("Slow consumer: keep-alive answers not read, disconnecting")
	}
}
