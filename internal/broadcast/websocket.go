package broadcast

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/sirupsen/logrus"
)

// A server made by NewWebSocket sends every line as one WebSocket message
// (RFC 6455): a text frame, or a binary one when the line is not valid
// UTF-8. Its listener hands it connections whose opening handshake is
// done (package webfeed upgrades them). The frames are encoded once into
// the shared log, as the text protocol's lines are, and the same bytes go
// to every client; what a client gets privately (a pong, a ping, the
// close frame) goes through its one writer, between whole frames.
//
// Clients only read: their data messages are counted as unknown lines and
// otherwise ignored. A ping is answered with a pong; the server pings
// every client every PingInterval, and a client that then sends nothing,
// not even the pong, for IdleTimeout is closed. A client the server
// closes (a slow consumer, a protocol violation, shutdown) is sent a close
// frame naming why after the frames it was sent whole, then the TCP
// connection is closed once it has that frame or after wsCloseGrace.

// WebSocketOptions configure a server of WebSocket clients.
type WebSocketOptions struct {
	// PingInterval is how often every client is pinged; zero means
	// DefaultPingInterval.
	PingInterval time.Duration
	// Start, when set, tells where a newly accepted client asked to
	// start: from is "" (live, as without Start), "next" (live, told
	// the stream and the next sequence number first), "first" (the
	// oldest line retained) or a sequence number; stream is the stream
	// that number belongs to, "" for this one. A resuming client's first
	// message is its preamble (resumeLocked). Start runs on the accepting
	// goroutine.
	Start func(conn net.Conn) (from, stream string)
}

// DefaultPingInterval is how often a WebSocket client is pinged by
// default.
const DefaultPingInterval = 20 * time.Second

// wsCloseGrace bounds how long a client being closed may take to read its
// close frame (a variable for tests).
var wsCloseGrace = 5 * time.Second

// wsServer is what a WebSocket server's clients share.
type wsServer struct {
	ping  time.Duration
	start func(net.Conn) (from, stream string)
	auth  *wsAuth // set when clients must authenticate (SetWebSocketAuth)

	lastPing time.Time // owned by the idle sweep
}

// NewWebSocket returns a server of WebSocket clients that will accept
// them, handshake done, on ln.
func NewWebSocket(ln net.Listener, limits Limits, o WebSocketOptions, logger *logrus.Entry) *Server {
	s := newServer(ln, limits, wsCodec{}, logger)
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	s.ws = &wsServer{ping: o.PingInterval, start: o.Start, lastPing: time.Now()}
	return s
}

// wsStart returns where a newly accepted client starts, nil for live
// without a preamble, and the stream its numbers belonged to when not
// this one: as the sequenced protocol's START, numbers of another stream
// start the client at the oldest line retained, and it is told.
func (s *Server) wsStart(conn net.Conn) (*seekStart, string) {
	if s.ws.start == nil {
		return nil, ""
	}
	from, stream := s.ws.start(conn)
	if from == "" {
		return nil, ""
	}
	var other string
	if stream != "" && stream != s.lines.stream {
		other = stream
	}
	switch {
	case from == "next":
		return &seekStart{seq: s.lines.endSeq.Load()}, other
	case from == "first" || other != "":
		return &seekStart{first: true}, other
	}
	seq, err := strconv.ParseUint(from, 10, 64)
	if err != nil || seq == 0 {
		return &seekStart{first: true}, other
	}
	return &seekStart{seq: seq}, other
}

// wsCodec frames each line as one unfragmented message.
type wsCodec struct{}

func (wsCodec) maxSize(n int) int { return n + wsMaxHeader }

func (wsCodec) encodeLocked(dst, line []byte, _ uint64) ([]byte, bool) {
	op := byte(wsText)
	if !utf8.Valid(line) {
		op = wsBinary
	}
	return appendWSFrame(dst, op, line), true
}

// encodeMessageLocked sends a typed message as its text line.
func (wsCodec) encodeMessageLocked(dst []byte, m *message.Message, seq uint64) ([]byte, bool) {
	return wsCodec{}.encodeLocked(dst, m.AppendText(nil), seq)
}

func (wsCodec) appendedLocked(*log)         {}
func (wsCodec) closingLocked(*log)          {}
func (wsCodec) chunkLocked(_, _ *chunk)     {}
func (wsCodec) joinLocked() (joined, error) { return joined{}, nil }

// The server's own messages, the preamble of a resuming client and the
// gap a live client reads past, are JSON text messages ended by a
// newline, which no feed line holds; they take no sequence number.

// resumeLocked makes a resuming client's preamble: the stream and the
// sequence number of the first line to come, the lines asked for that the
// log no longer holds, and the stream the client's numbers belonged to,
// when another.
func (wsCodec) resumeLocked(l *log, cur cursor, gap gapRange, other string) (joined, error) {
	b := strconv.AppendQuote([]byte(`{"stream":`), l.stream)
	b = strconv.AppendUint(append(b, `,"first":`...), cur.seq, 10)
	if !gap.empty() {
		b = appendGapJSON(append(b, ','), gap)
	}
	if other != "" {
		b = strconv.AppendQuote(append(b, `,"changed_from":`...), other)
	}
	b = append(b, "}\n"...)
	return joined{preamble: appendWSFrame(nil, wsText, b)}, nil
}

func appendGapJSON(b []byte, g gapRange) []byte {
	b = strconv.AppendUint(append(b, `"gap":{"from":`...), g.From, 10)
	b = strconv.AppendUint(append(b, `,"to":`...), g.To, 10)
	return append(b, '}')
}

// gapLocked tells the clients reading past a jump of the log's sequence
// numbers which lines were never published.
func (wsCodec) gapLocked(l *log, from, to uint64) {
	msg := append(appendGapJSON([]byte("{"), gapRange{from, to}), "}\n"...)
	l.appendRawLocked(wsMaxHeader+len(msg), func(dst []byte) []byte { return appendWSFrame(dst, wsText, msg) })
}

// skip returns the offset in buf, frames from a chunk's start, after its
// first n lines' frames, passing over the server's own messages.
func (wsCodec) skip(buf []byte, n uint64) int {
	off := 0
	for n > 0 && off+2 <= len(buf) {
		size, hdr := int(buf[off+1]&0x7f), 2
		switch size {
		case 126:
			size, hdr = int(binary.BigEndian.Uint16(buf[off+2:])), 4
		case 127:
			size, hdr = int(binary.BigEndian.Uint64(buf[off+2:])), 10
		}
		end := off + hdr + size
		if buf[off]&0x0f != wsText || size == 0 || buf[end-1] != '\n' {
			n--
		}
		off = end
	}
	return min(off, len(buf))
}

// wsReader is the reader's state of a WebSocket client.
type wsReader struct {
	inMessage bool // a fragmented data message has begun
	size      int  // its bytes so far
	// discard is set once the client is being closed for a violation:
	// whatever it sends then is read and dropped, so that the close
	// frame reaches it before the connection is closed.
	discard bool
}

// wsCloseFor returns the close frame's code and reason for a client the
// server closes for reason, or code 0 when it is closed at once: its peer
// left, or failed, or is idle (a live browser answers pings by itself).
func (c *client) wsCloseFor(reason closeReason) (code int, text string) {
	switch reason {
	case closeSlow:
		return wsPolicy, "slow consumer: queue limit exceeded"
	case closeUnknown:
		return wsPolicy, "too many messages: this feed is read-only"
	case closeDrained, closeShutdown:
		return wsGoingAway, "server shutting down"
	case closeProtocol:
		return wsProtocolError, "protocol error"
	case closeAuth:
		return wsPolicy, "authentication failed"
	case closeRevoked:
		return wsPolicy, "key no longer authorized"
	}
	return 0, ""
}

// closeWS closes the client for reason with a close frame of code and
// text, unless it was closed already; it reports whether it did. The
// frame is queued for the writer, which sends it after the frames it is
// writing and then nothing more; the caller wakes the writer. A write
// that does not end within wsCloseGrace fails.
func (c *client) closeWS(reason closeReason, code int, text string) bool {
	if !c.claimClose(reason) {
		return false
	}
	c.conn.SetWriteDeadline(time.Now().Add(wsCloseGrace))
	c.answers.pushAlways(wsCloseFrame(code, text))
	return true
}

// maxFrameBytes returns the most bytes a client frame may take in the
// read buffer: the payload limit and the longest header.
func maxFrameBytes(lim *Limits) int { return lim.MaxClientLine + 14 }

// handleFrames handles every complete frame of p, a WebSocket client's
// bytes, and returns how many bytes they took; the rest is an incomplete
// frame. It reports false when the client is closed at once.
func (c *client) handleFrames(p []byte, lim *Limits, debug bool) (used int, ok bool) {
	if c.r.ws.discard {
		return len(p), true
	}
	max := lim.MaxClientLine
	for {
		f, n, err := parseWSFrame(p[used:], max)
		if err != nil {
			c.wsViolation(err.(*wsError))
			return len(p), true
		}
		if n == 0 {
			return used, true
		}
		used += n
		if c.reason.Load() != int32(closeNone) {
			continue // closing: the frame is dropped
		}
		if debug {
			c.log().Debugf("<< frame opcode %d, %d bytes", f.opcode, len(f.payload))
		}
		switch f.opcode {
		case wsPing:
			c.keepAlive(appendWSFrame(nil, wsPong, f.payload))
		case wsPong:
			// Its arrival was the point: the client is alive.
		case wsClose:
			c.peerClose(f.payload)
			return len(p), true
		case wsText, wsBinary:
			if c.r.ws.inMessage {
				c.wsViolation(&wsError{wsProtocolError, "a new message before the last one ended"})
				return len(p), true
			}
			c.r.ws.inMessage, c.r.ws.size = !f.fin, len(f.payload)
			if f.fin && !c.unknownLine(f.payload, lim.MaxUnknownLines) {
				return len(p), true
			}
		case wsContinuation:
			if !c.r.ws.inMessage {
				c.wsViolation(&wsError{wsProtocolError, "a continuation frame outside a message"})
				return len(p), true
			}
			if c.r.ws.size += len(f.payload); c.r.ws.size > max {
				c.wsViolation(&wsError{wsTooBig, fmt.Sprintf("message too big: at most %d bytes", max)})
				return len(p), true
			}
			if f.fin {
				c.r.ws.inMessage = false
				if !c.unknownLine(f.payload, lim.MaxUnknownLines) {
					return len(p), true
				}
			}
		}
	}
}

// wsViolation closes a client that broke the protocol or sent a message
// too big, with the close code that says which.
func (c *client) wsViolation(e *wsError) {
	c.r.ws.discard = true
	if c.closeWS(closeProtocol, e.code, e.reason) {
		c.log().WithField("close_code", e.code).Warn("WebSocket client broke the protocol (" + e.reason + "), disconnecting")
		c.wakeWriterFromReader()
	}
}

// peerClose answers a client's close frame with one of the same code,
// then the connection closes.
func (c *client) peerClose(payload []byte) {
	c.r.ws.discard = true
	code := wsNormal
	if len(payload) >= 2 {
		if code = int(binary.BigEndian.Uint16(payload)); !validCloseCode(code) {
			code = wsProtocolError
		}
	} else if len(payload) == 1 {
		code = wsProtocolError
	}
	if c.closeWS(closePeer, code, "") {
		c.wakeWriterFromReader()
	}
}

// wsRefusal is the close frame a connection over max_clients, or one that
// comes while the server is stopping, is sent.
func wsRefusal(draining bool, maxClients int) []byte {
	if draining {
		return wsCloseFrame(wsGoingAway, "server shutting down")
	}
	return wsCloseFrame(wsTryLater, fmt.Sprintf("too many clients (max_clients %d); try again later", maxClients))
}

var wsPingFrame = appendWSFrame(nil, wsPing, nil)

// pingClients pings every client once PingInterval has passed since the
// last round; the writers woken run on a few goroutines.
func (s *Server) pingClients(now time.Time) {
	if s.ws == nil || now.Sub(s.ws.lastPing) < s.ws.ping || s.lines.closed.Load() {
		return
	}
	s.ws.lastPing = now
	var woken []*client
	s.mu.Lock()
	for _, c := range s.clients {
		if c.reason.Load() != int32(closeNone) || !c.answers.push(wsPingFrame, false) {
			continue
		}
		if c.unparkWriter() {
			woken = append(woken, c)
		}
	}
	s.mu.Unlock()
	inParallel(woken, (*client).runWriterNoWait)
}

// wsFinish writes a closing client's queued answers, its close frame
// last, and nothing of the log after them; it then returns writerDrained
// so that the connection is half-closed and closed once the client has
// them (endWriterRun). A write that the socket does not take at once is
// handed off, as writeLoop does.
func (c *client) wsFinish(cur cursor, rio *rawIO, nowait, debug bool) writerEnd {
	if c.connClosed.Load() {
		return writerClosed
	}
	if c.w.closeSent {
		return writerDrained
	}
	var nka, nKeepAlive int
	rio.acks, nka, nKeepAlive = c.answers.take(rio.acks)
	c.w.closeSent = true
	w := sent{next: cur, nka: nka, nKeepAlive: nKeepAlive}
	bufs := net.Buffers(append(rio.bufs[:0], rio.acks))
	if nowait {
		rest, err := rio.writeNow(c.raw, bufs)
		if err != nil {
			return writerClosed // endWriterRun closes the connection
		}
		if len(rest) > 0 {
			go c.finishWrite(rio, rest, w, debug) // it comes back here, and ends
			return writerHandedOff
		}
	} else if _, err := bufs.WriteTo(c.conn); err != nil {
		return writerClosed
	}
	c.wrote(w, debug)
	return writerDrained
}
