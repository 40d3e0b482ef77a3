package broadcast

import (
	"crypto/tls"
	"net"
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
	closeIdle                  // sent a keep-alive once, then nothing for IdleTimeout
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
	// raw is a plain TCP client's connection, read without blocking by
	// the poller (poll.go); nil for clients read by a blocked goroutine.
	raw     syscall.RawConn
	session signed.Session  // a signed client's, from its anchor; a WebSocket client's that authenticates, random
	ended   func(ClientEnd) // told when the client has ended (Placement.Ended); may be nil

	// firstSeq is the first line the client was to be sent: stored by
	// newClient, and by the writer of a signed client that resumed
	// (restartAt); loaded by anyone.
	firstSeq atomic.Uint64

	// The client's end, for any goroutine.
	reason     atomic.Int32 // closeReason, set once by markClosed (or closeWS)
	connClosed atomic.Bool  // conn is closed (closeConn)
	halves     atomic.Int32 // reader and writer not yet ended (endHalf)
	peerEOF    atomic.Bool  // the client closed its side: the writer answers, then closes

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
	// restart is a signed client's new start, set by its reader on a
	// RESUME and taken by the writer (signedresume.go).
	restart atomic.Pointer[restart]
	// closeSent is set once a WebSocket client's close frame is written
	// or being written: nothing follows it.
	closeSent bool

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
	// spoke is set once the client has sent a keep-alive (KEEP_ALIVE, or
	// PING on a signed server): from then on the idle timeout applies to
	// it. A client that never sends a keep-alive, such as a plain nc
	// watching the feed, stays as long as its TCP peer is alive.
	spoke atomic.Bool
	ended atomic.Bool // the reader has ended: the peer left or the connection failed
	// unknown counts the text client's lines that were neither an ack
	// nor a keep-alive (a WebSocket client's data messages); only the
	// reader stores it.
	unknown atomic.Uint64

	ws wsReader // a WebSocket client's frames; owned by the reader
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

// pushAlways queues b whatever is queued already: a close frame.
func (q *answerQueue) pushAlways(b []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.buf = append(q.buf, b...)
	q.n++
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
	nextSeq  atomic.Uint64 // the sequence number of next (or of a signed client's next ack)
	lastGood atomic.Uint64 // the last line acknowledged (good), or the first's minus one
	good     atomic.Uint64 // acks matching their line
	bad      atomic.Uint64 // acks of a wrong length or for nothing sent
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

func newClient(s *Server, id uint64, conn net.Conn, at *seekStart, other string) (*client, error) {
	var (
		start cursor
		j     joined
		err   error
	)
	if at != nil {
		var gap gapRange
		start, j, gap, err = s.lines.joinAt(*at, other)
		if err == nil {
			s.resumed.Add(1)
			if !gap.empty() {
				s.gaps.Add(1)
				s.gapLines.Add(gap.To - gap.From + 1)
			}
		}
	} else {
		start, j, err = s.lines.join()
	}
	if err != nil {
		return nil, err
	}
	c := &client{
		id:          id,
		srv:         s,
		conn:        conn,
		remote:      conn.RemoteAddr().String(),
		connectedAt: time.Now(),
		raw:         s.rawConn(conn),
		session:     j.session,
	}
	c.w.cur, c.w.preamble = start, j.preamble
	c.firstSeq.Store(start.seq)
	c.acks.next = start
	c.halves.Store(2)
	c.r.lastRead.Store(c.connectedAt.UnixNano())
	c.w.sentSeq.Store(start.seq)
	c.w.sentPos.Store(start.pos())
	c.w.writingSeq.Store(start.seq)
	c.acks.nextSeq.Store(start.seq)
	c.acks.lastGood.Store(start.seq - 1)
	if s.signed != nil || s.sequenced {
		c.acks.next = cursor{} // acks go by sequence number; do not pin the log
	}
	if s.signed != nil {
		c.auth.needed = s.signed.auth
	}
	if s.ws != nil && s.ws.auth != nil {
		c.auth.needed = true
		if c.session, err = newWSSession(); err != nil {
			return nil, err
		}
	}
	if s.ws != nil {
		c.acks.next = cursor{} // WebSocket clients do not acknowledge
		c.r.spoke.Store(true)  // they are pinged: the idle timeout applies
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
// disconnect and disconnectInline do, and are what the rest calls. A
// WebSocket client closed for a reason it is to be told (wsCloseFor) is
// closed by its writer, after its close frame (closeWS).
func (c *client) markClosed(reason closeReason) bool {
	if c.srv.ws != nil {
		if code, text := c.wsCloseFor(reason); code != 0 {
			return c.closeWS(reason, code, text)
		}
	}
	if !c.claimClose(reason) {
		return false
	}
	c.closeConn()
	return true
}

// claimClose records reason as why the client closes, unless it is
// closing already, and counts it in the Stats counter for that reason;
// it reports whether it did. The count comes before the connection
// closes, so that whoever sees the client gone sees it counted too.
func (c *client) claimClose(reason closeReason) bool {
	if !c.reason.CompareAndSwap(int32(closeNone), int32(reason)) {
		return false
	}
	if n := c.srv.closeCounter(reason); n != nil {
		n.Add(1)
	}
	return true
}

// closeCounter returns the Stats counter of clients closed for reason,
// or nil for a reason that has none.
func (s *Server) closeCounter(reason closeReason) *atomic.Uint64 {
	switch reason {
	case closeSlow:
		return &s.slow
	case closeIdle:
		return &s.idle
	case closeProtocol, closeUnknown:
		return &s.protocol
	case closeHandshake:
		return &s.handshakes
	case closeRejected:
		return &s.rejected
	case closeAuth:
		return &s.authFailed
	}
	return nil
}

// closeConn closes the connection, once: whichever half is blocked on it
// fails. It reports whether this call closed it.
func (c *client) closeConn() bool {
	if c.connClosed.Swap(true) {
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
		"lines_sent":      c.w.sentSeq.Load() - c.firstSeq.Load(),
		"acks_good":       c.acks.good.Load(),
		"acks_mismatched": c.acks.bad.Load(),
	}
	if n := c.r.unknown.Load(); n > 0 {
		f["unknown_lines"] = n
	}
	c.log().WithFields(f).Info("Connection closed")
}
