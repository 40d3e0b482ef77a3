package broadcast

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/chatty-dev/chatty/pkg/wire"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// closeReason says why a client was closed; the first reason wins.
type closeReason int

const (
	closeNone      closeReason = iota
	closePeer                  // the client closed the connection
	closeSlow                  // lagged beyond its queue limits
	closeIdle                  // sent nothing for IdleTimeout
	closeProtocol              // sent a line over MaxClientLine
	closeError                 // a read or write failed
	closeShutdown              // the server is stopping and the drain timed out
	closeDrained               // the server is stopping and the client caught up
	closeHandshake             // TLS handshake or client authentication failed
	closeRejected              // sent a signed frame that was rejected
	closeAuth                  // failed the signed protocol's authentication
	closeRateLimit             // kept sending signed messages over its rate
	closeRevoked               // its key is no longer authorized (reload)
	closeUnknown               // sent more than MaxUnknownLines unknown lines
)

func (r closeReason) String() string {
	return [...]string{"", "closed by peer", "slow consumer", "idle timeout", "line too long", "i/o error", "drain timeout", "shutdown", "TLS handshake failed", "frame rejected", "authentication failed", "rate limit", "key revoked", "too many unknown lines"}[r]
}

var keepAliveAck = []byte(wire.KeepAliveAck + "\n")

// maxPendingKeepAlives bounds the keep-alive answers queued for a client
// that does not read them; the original workers have at most one pending.
const maxPendingKeepAlives = 1024

// client is one connection: a reader for keep-alives and acks and a
// writer that follows the shared log. Each half runs on a goroutine of its
// own while it has work and parks when it has none (see park.go); a TLS
// or signed client's reader is a goroutine blocked in Read.
//
// Its fields are grouped by owner. Those at the top are set by newClient
// and only read after, but for the end of the client, which any
// goroutine may look at. The writer's and the reader's parts belong to
// the goroutine running that half (the parked list and the poller hand
// them from one goroutine to the next); answers and acks have a mutex of
// their own; a few counters are atomics that their owner stores and
// anyone loads (Server.Stats and Clients).
type client struct {
	id          uint64
	srv         *Server
	conn        net.Conn
	remote      string
	listener    net.Addr // the address of the listener that accepted it
	connectedAt time.Time
	firstSeq    uint64 // the first line the client was to be sent
	// raw is a plain TCP client's connection, read without blocking by
	// the poller (poll.go); nil for clients read by a blocked goroutine.
	raw     syscall.RawConn
	session signed.Session // a signed client's, from its anchor

	// The client's end, for any goroutine.
	reason  atomic.Int32 // closeReason, set once by markClosed
	halves  atomic.Int32 // reader and writer not yet ended (endHalf)
	peerEOF atomic.Bool  // the client closed its side: the writer answers, then closes

	w       clientWriter
	r       clientReader
	answers answerQueue
	acks    clientAcks
	auth    clientAuth
}

// clientWriter is the writer's part of a client.
type clientWriter struct {
	// cur and preamble belong to the goroutine running the writer, or,
	// while it is parked, to the parked list, which hands them to the
	// next. cur is where the parked writer goes on; the writer running
	// takes it and leaves it empty, as it pins the log (takeCursor).
	cur      cursor
	preamble []byte // private first bytes (a signed client's anchor); cleared once written

	parkIdx int // index + 1 in the server's parked writers, 0 when running; guarded by parkedWriters.mu

	// Stored by the writer, loaded by anyone.
	sentSeq atomic.Uint64 // every line before this one was written
	sentPos atomic.Uint64 // log position matching sentSeq
	// writingSeq is sentSeq plus the lines of the write in progress: a
	// fast client can acknowledge a line before the write call returns.
	writingSeq atomic.Uint64
	keepAlives atomic.Uint64 // keep-alive answers written
}

// clientReader is the reader's part of a client. Only one goroutine at a
// time reads a client: its blocked reader, or the one that took a parked
// reader out of the poller (parked, or the poller's one-shot event).
type clientReader struct {
	// Owned by the reader of a plain TCP client (poll.go).
	partial   []byte // a parked reader's incomplete line
	inPass    bool   // a pass of pollRead is reading
	wakeAfter bool   // the writer is to be woken when the pass ends

	// For any goroutine.
	parked   atomic.Bool  // the reader is parked in the poller; whoever swaps it to false runs it
	lastRead atomic.Int64 // when the client last sent something, Unix nanoseconds (raw clients; sweepIdle)
	ended    atomic.Bool  // the reader has ended: the peer left or the connection failed
	// unknown counts the text client's lines that were neither an ack
	// nor a keep-alive; only the reader stores it.
	unknown atomic.Uint64
}

// answerQueue holds the private bytes the reader queues for the writer:
// KEEP_ALIVE_ACK lines, PONG or RESPONSE frames.
type answerQueue struct {
	mu         sync.Mutex // guards the rest
	buf        []byte
	n          int // answers queued
	keepAlives int // of which keep-alive answers
}

// push queues b, unless maxPendingKeepAlives answers are queued already;
// it reports whether it did.
func (q *answerQueue) push(b []byte, keepAlive bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= maxPendingKeepAlives {
		return false
	}
	q.buf = append(q.buf, b...)
	q.n++
	if keepAlive {
		q.keepAlives++
	}
	return true
}

// take moves the queued answers into dst and returns them with their
// number and the number of keep-alive answers among them.
func (q *answerQueue) take(dst []byte) (out []byte, n, keepAlives int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	dst = append(dst[:0], q.buf...)
	n, keepAlives = q.n, q.keepAlives
	q.buf, q.n, q.keepAlives = q.buf[:0], 0, 0
	return dst, n, keepAlives
}

// pending returns the number of answers queued.
func (q *answerQueue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// clientAcks matches the client's acks with the lines written: the
// reader matches them (handleAck, handleSeqAck), the writer gives up on
// those too far behind (trimAcks).
type clientAcks struct {
	mu sync.Mutex // guards next and firstUnacked; nextSeq, good and bad change under it
	// next is the oldest line not yet acknowledged (text protocol;
	// signed clients ack by sequence number and keep it empty, so as
	// not to pin the log).
	next cursor
	// firstUnacked is when a client that has acknowledged nothing yet was
	// first sent a line (trimAcks), in Unix nanoseconds.
	firstUnacked int64

	// Loaded by anyone.
	nextSeq atomic.Uint64 // the sequence number of next (or of a signed client's next ack)
	good    atomic.Uint64 // acks matching their line
	bad     atomic.Uint64 // acks of a wrong length or for nothing sent
}

// clientAuth is a signed client's authentication, on a server that
// requires it.
type clientAuth struct {
	needed bool        // set by newClient: the writer sends nothing until done
	done   atomic.Bool // the client authenticated (set by its reader)
	// counted is set while the client counts in the server's
	// authenticating; guarded by the server's mu.
	counted bool
	key     atomic.Pointer[peerKey] // the key the client authenticated with
}

func newClient(s *Server, id uint64, conn net.Conn) (*client, error) {
	start, j, err := s.lines.join()
	if err != nil {
		return nil, err
	}
	c := &client{
		id:          id,
		srv:         s,
		conn:        conn,
		remote:      conn.RemoteAddr().String(),
		connectedAt: time.Now(),
		firstSeq:    start.seq,
		raw:         s.rawConn(conn),
		session:     j.session,
	}
	c.w.cur, c.w.preamble = start, j.preamble
	c.acks.next = start
	c.halves.Store(2)
	c.r.lastRead.Store(c.connectedAt.UnixNano())
	c.w.sentSeq.Store(start.seq)
	c.w.sentPos.Store(start.pos())
	c.w.writingSeq.Store(start.seq)
	c.acks.nextSeq.Store(start.seq)
	if s.signed != nil {
		c.acks.next = cursor{} // acks go by sequence number; do not pin the log
		c.auth.needed = s.signed.auth
	}
	return c, nil
}

// queueAnswer queues private bytes for the writer: a keep-alive answer,
// or a response. It reports false when too many are queued already: the
// client does not read them.
func (c *client) queueAnswer(b []byte, keepAlive bool) bool {
	if !c.answers.push(b, keepAlive) {
		return false
	}
	c.wakeWriterFromReader()
	return true
}

// log returns the client's logger. It is built when needed rather than
// kept: an entry with its fields costs each idle connection about half a
// kilobyte. It is not inlined, so that the fields map logrus builds stays
// out of the frames of the client's goroutines: their stacks start at
// 2 KiB and the keep-alive path already comes close to that (bench/
// manyconns shows a stack that doubled as 4 KiB more per client).
//
//go:noinline
func (c *client) log() *logrus.Entry {
	return c.srv.logger.WithField(logging.FieldConnection, c.id)
}

// disconnect closes the client for reason and makes both halves end. It
// reports whether this call did it (the first reason wins, so callers
// count and log only then). A parked half is started on a goroutine of
// its own, so it may be called with any lock held, the server's mu
// included; a half that is running finds the client closed by itself.
func (c *client) disconnect(reason closeReason) bool {
	if !c.markClosed(reason) {
		return false
	}
	c.wakeWriter()
	c.wakeReader()
	return true
}

// disconnectInline is disconnect for a caller that holds no lock: the
// parked halves end on the calling goroutine rather than on goroutines of
// their own, so that closing many idle clients at once (sweepIdle)
// starts none.
func (c *client) disconnectInline(reason closeReason) bool {
	if !c.markClosed(reason) {
		return false
	}
	if c.unparkWriter() {
		c.runWriter() // it finds the client closed and ends
	}
	if c.r.parked.CompareAndSwap(true, false) {
		c.pollRead() // its read fails at once and it ends
	}
	return true
}

// authPending reports whether the client has yet to authenticate before
// it may be sent anything.
func (c *client) authPending() bool { return c.auth.needed && !c.auth.done.Load() }

// markClosed records reason and closes the connection, unless the client
// was closed already; it reports whether it did. It wakes neither half:
// disconnect and disconnectInline do, and are what the rest calls.
func (c *client) markClosed(reason closeReason) bool {
	if !c.reason.CompareAndSwap(int32(closeNone), int32(reason)) {
		return false
	}
	c.conn.Close()
	return true
}

// start runs the client's two halves: parked, or on goroutines when they
// have work already.
func (c *client) start() {
	c.startWriter()
	c.startReader()
}

// readRun runs the reader until it parks or ends.
func (c *client) readRun() {
	if c.raw != nil {
		c.pollRead()
		return
	}
	c.readLoop()
	c.endReader()
}

// endReader ends the reader half for good: it marks the reader ended,
// which a lingering writer waits for, then counts the half (endHalf).
func (c *client) endReader() {
	c.r.ended.Store(true)
	c.endHalf()
}

// lingerPoll is how often a draining client's send queue is looked at.
const lingerPoll = 5 * time.Millisecond

// lingerUntilDelivered waits until the kernel holds no unacknowledged
// bytes for the client, the reader ends, or the deadline passes.
func (c *client) lingerUntilDelivered(deadline time.Time) {
	t := time.NewTicker(lingerPoll)
	defer t.Stop()
	for time.Now().Before(deadline) && !c.r.ended.Load() {
		if n, ok := unsentBytes(c.conn); !ok || n == 0 {
			return
		}
		<-t.C
	}
}

// unsentBytes reports the bytes of conn's send queue not yet acknowledged
// by the peer (SIOCOUTQ); ok is false when that cannot be known.
func unsentBytes(conn net.Conn) (n int, ok bool) {
	if tc, isTLS := conn.(*tls.Conn); isTLS {
		conn = tc.NetConn()
	}
	sc, isSys := conn.(syscall.Conn)
	if !isSys {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var ioErr error
	if err := raw.Control(func(fd uintptr) { n, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ioErr != nil {
		return 0, false
	}
	return n, true
}

// logClosed logs why the client left, once it is off the server's list,
// so that whoever reads the line may take its place at once.
func (c *client) logClosed() {
	f := logrus.Fields{
		"reason":          closeReason(c.reason.Load()).String(),
		"lines_sent":      c.w.sentSeq.Load() - c.firstSeq,
		"acks_good":       c.acks.good.Load(),
		"acks_mismatched": c.acks.bad.Load(),
	}
	if n := c.r.unknown.Load(); n > 0 {
		f["unknown_lines"] = n
	}
	c.log().WithFields(f).Info("Connection closed")
}

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
	if c.srv.signed != nil {
		log.Debugf(">> %d bytes of frames, %d PONG", len(data), nka)
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
	if c.srv.signed != nil {
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
		c.srv.handshakes.Add(1)
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
		if need := lim.MaxClientLine + 2; (grow || end == len(buf)) && len(buf) < need {
			nb := make([]byte, min(2*len(buf), need))
			end = copy(nb, buf[:end])
			buf = nb
		}
		if lim.IdleTimeout > 0 && c.reason.Load() == int32(closeNone) && !c.srv.lines.closed.Load() {
			c.conn.SetReadDeadline(time.Now().Add(lim.IdleTimeout))
		}
		n, err := c.conn.Read(buf[end:])
		grow = n > 0 && end+n == len(buf)
		end += n
		used, ok := c.handleLines(buf[start:end], lim, debug)
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
		c.srv.protocol.Add(1)
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
		if !c.srv.lines.closed.Load() && c.disconnect(closeIdle) {
			c.srv.idle.Add(1)
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
		c.srv.protocol.Add(1)
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
	if c.queueAnswer(answer, true) {
		return
	}
	if c.disconnect(closeSlow) {
		c.srv.slow.Add(1)
		c.log().WithField("unanswered_keepalives", maxPendingKeepAlives).
			Warn("Slow consumer: keep-alive answers not read, disconnecting")
	}
}
