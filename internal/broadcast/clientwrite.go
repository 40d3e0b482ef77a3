package broadcast

import (
	"bytes"
	"net"
	"time"

	"github.com/chatty-dev/chatty/pkg/wire"
	"github.com/sirupsen/logrus"
)

// writerEnd says how a run of the writer ended.
type writerEnd int

const (
	writerParked    writerEnd = iota // nothing to write: parked until there is
	writerHandedOff                  // the socket was full: a goroutine goes on (finishWrite)
	writerClosed                     // the client is closed, or the peer left
	writerDrained                    // the server is stopping and everything was written
)

// sent is what one write accounts for, once all its bytes are out.
type sent struct {
	next       cursor // the cursor after the log's bytes written
	data       []byte // those bytes, for the debug log
	nka        int    // answers written
	nKeepAlive int    // of which keep-alive answers
}

// writeLoop sends the log to the client from cur until it has nothing
// left to write. With nowait (plain TCP clients only) it never waits for
// the socket: what it does not take at once is handed to a goroutine of
// its own, which goes on with the writer (finishWrite).
func (c *client) writeLoop(cur cursor, nowait bool) writerEnd {
	lg := c.srv.lines
	rio := c.srv.getRawIO()
	defer func() {
		if rio != nil {
			c.srv.putRawIO(rio)
		}
	}()
	debug := c.srv.logger.Logger.IsLevelEnabled(logrus.DebugLevel)
	for {
		if c.w.restart.Load() != nil { // a load first: no store on every write
			cur = c.restartAt(c.w.restart.Swap(nil))
		}
		if c.srv.ws != nil && c.reason.Load() != int32(closeNone) {
			end := c.wsFinish(cur, rio, nowait, debug)
			if end == writerHandedOff {
				rio = nil
			}
			return end
		}
		if c.authPending() {
			// Nothing, not even the anchor, before the client has
			// authenticated; authenticate wakes the writer. A server
			// that stops closes it at once: there is nothing to drain.
			if c.reason.Load() != int32(closeNone) {
				return writerClosed
			}
			if lg.closed.Load() {
				c.disconnect(closeDrained)
				return writerClosed
			}
			if c.parkWriter(cur) {
				return writerParked
			}
			continue
		}
		eof := c.peerEOF.Load() // before taking the answers its reader queued
		data, next := cur.next()
		var nka, nKeepAlive int
		rio.acks, nka, nKeepAlive = c.answers.take(rio.acks)
		pre := c.w.preamble
		c.w.preamble = nil
		if len(data) == 0 && nka == 0 && len(pre) == 0 {
			if eof {
				c.disconnect(closePeer)
				return writerClosed
			}
			if c.reason.Load() != int32(closeNone) {
				return writerClosed
			}
			if lg.closed.Load() {
				if data, _ = cur.next(); len(data) == 0 {
					if c.srv.ws != nil {
						c.markClosed(closeDrained) // its close frame first
						continue
					}
					return writerDrained
				}
				continue
			}
			if c.parkWriter(cur) {
				return writerParked
			}
			continue
		}
		bufs := net.Buffers(rio.bufs[:0])
		if len(pre) > 0 {
			bufs = append(bufs, pre)
		}
		if len(data) > 0 {
			bufs = append(bufs, data)
		}
		if nka > 0 {
			bufs = append(bufs, rio.acks)
		}
		w := sent{next: next, data: data, nka: nka, nKeepAlive: nKeepAlive}
		c.w.writingSeq.Store(next.seq)
		if nowait {
			rest, err := rio.writeNow(c.raw, bufs)
			if err != nil {
				c.fail(err)
				return writerClosed
			}
			if len(rest) > 0 {
				go c.finishWrite(rio, rest, w, debug) // rest is in rio
				rio = nil
				return writerHandedOff
			}
		} else if _, err := bufs.WriteTo(c.conn); err != nil {
			if !c.handshakeComplete() {
				// The write ran the TLS handshake that the reader waits
				// for, and it failed: the same failure, counted once.
				c.handshakeFailed(err)
				return writerClosed
			}
			c.fail(err)
			return writerClosed
		}
		c.wrote(w, debug)
		cur = next
	}
}

// wrote accounts for a write whose bytes are all out.
func (c *client) wrote(w sent, debug bool) {
	if w.nKeepAlive > 0 {
		c.w.keepAlives.Add(uint64(w.nKeepAlive))
		c.srv.keepAlives.Add(uint64(w.nKeepAlive))
	}
	if debug {
		c.logSent(w.data, w.nka)
	}
	c.w.sentSeq.Store(w.next.seq)
	c.w.sentPos.Store(w.next.pos())
	c.trimAcks(w.next)
}

// finishWrite writes what the socket did not take at once, waiting as
// long as it takes, and runs the writer on.
func (c *client) finishWrite(rio *rawIO, rest net.Buffers, w sent, debug bool) {
	_, err := rest.WriteTo(c.conn)
	c.srv.putRawIO(rio)
	if err != nil {
		c.fail(err)
		c.endWriterRun(writerClosed)
		return
	}
	c.wrote(w, debug)
	c.endWriterRun(c.writeLoop(w.next, false))
}

func (c *client) logSent(data []byte, nka int) {
	log := c.log()
	if c.srv.signed != nil || c.srv.ws != nil {
		log.Debugf(">> %d bytes of frames, %d answers", len(data), nka)
		return
	}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		log.Debugf(">> %s", data[:i])
		data = data[i+1:]
	}
	for range nka {
		log.Debug(">> " + wire.KeepAliveAck)
	}
}

// ackGrace is how long a client that has acknowledged nothing may take to
// acknowledge the first line it was sent before trimAcks takes it for one
// that never will (a variable for tests).
var ackGrace = 10 * time.Second

// trimAcks gives up on acks for lines too far behind what was written, so
// that a client that never acknowledges (a plain nc, say) does not pin the
// log: for a client that has acknowledged nothing ackGrace after it was
// sent its first line, at every write; for the others, beyond the queue
// limits.
func (c *client) trimAcks(written cursor) {
	lim := c.srv.limits.Load()
	c.acks.mu.Lock()
	defer c.acks.mu.Unlock()
	if c.srv.ws != nil {
		c.acks.nextSeq.Store(written.seq) // nothing to acknowledge
		return
	}
	if c.srv.signed != nil || c.srv.sequenced {
		if written.seq-c.acks.nextSeq.Load() > uint64(lim.QueueLines) {
			c.acks.nextSeq.Store(written.seq)
		}
		return
	}
	if written.seq-c.acks.next.seq > uint64(lim.QueueLines) || written.pos()-c.acks.next.pos() > uint64(lim.QueueBytes) || c.neverAcksLocked(written) {
		c.acks.next = written
		c.acks.nextSeq.Store(written.seq)
	}
}

// neverAcksLocked reports whether the client, sent lines up to written,
// has acknowledged none of them ackGrace after it was sent the first.
func (c *client) neverAcksLocked(written cursor) bool {
	if written.seq == c.acks.next.seq || c.acks.good.Load()+c.acks.bad.Load() > 0 {
		return false
	}
	now := time.Now().UnixNano()
	if c.acks.firstUnacked == 0 {
		c.acks.firstUnacked = now
		return false
	}
	return now-c.acks.firstUnacked >= int64(ackGrace)
}

// handshakeTimeout bounds a TLS client's handshake (a variable for tests).
var handshakeTimeout = 10 * time.Second
