package broadcast

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// chunkSize is the capacity of one log chunk. A client writer sends at most
// one chunk's worth of lines per write system call.
const chunkSize = 256 << 10

// chunk is one block of the shared log: encoded lines (by the log's codec:
// "line\n" each, or signed frames), never split across chunks. Bytes below the published length are immutable, so
// client writers read them without locks; the appender writes only above it.
// A chunk is freed by the garbage collector once neither the log's
// retention nor any cursor holds it.
type chunk struct {
	buf      []byte // fixed length, never resliced or reallocated
	firstSeq uint64 // sequence number of the first line in buf
	startPos uint64 // log position (bytes since start) of buf[0]

	// head is the signed codec's chain digest after the line before
	// the chunk's first (chunkLocked, from the chunk before), from which
	// a resuming client's anchor is found at any line of the chunk; zero
	// for other codecs.
	head signed.Digest

	// lastAt is when a line was last appended to the chunk, in Unix
	// nanoseconds; the log's retention reads it. Guarded by the log's mu.
	lastAt int64

	// state packs the published length (high 32 bits) and the number of
	// published lines (low 32 bits), so readers load both consistently.
	state atomic.Uint64
	// next is set once the chunk is full and will take no more lines.
	next atomic.Pointer[chunk]
}

func newChunk(capacity int, firstSeq, startPos uint64) *chunk {
	return &chunk{buf: make([]byte, capacity), firstSeq: firstSeq, startPos: startPos}
}

// published returns the number of published bytes and lines.
func (c *chunk) published() (n int, lines uint64) {
	s := c.state.Load()
	return int(s >> 32), s & 0xffffffff
}

// lineAt returns the line (without "\n") starting at off, which must be the
// start of a published line.
func (c *chunk) lineAt(off int) []byte {
	n, _ := c.published()
	rest := c.buf[off:n]
	if i := bytes.IndexByte(rest, '\n'); i >= 0 {
		return rest[:i]
	}
	return rest // unreachable for published lines, kept safe
}

// cursor is a position in the log: a line boundary.
type cursor struct {
	c   *chunk
	off int    // byte offset in c.buf
	seq uint64 // sequence number of the next line at off
}

// pos returns the cursor's absolute log position in bytes.
func (cur cursor) pos() uint64 { return cur.c.startPos + uint64(cur.off) }

// log is the append-only shared log of encoded lines. One writer at a time
// appends (under mu); any number of readers follow it with cursors.
//
// The log keeps its most recent chunks, from tail to head, within its
// retention (retain.go), so that clients can resume from a sequence
// number; older chunks are freed once no cursor points into them.
type log struct {
	mu     sync.Mutex // guards head's unpublished tail, tail, retain and the codec's state; serialises appenders
	head   *chunk
	tail   *chunk    // the oldest chunk retained; head when retention is off
	retain Retention // the retention's limits
	codec  codec
	stream string // the stream's identity; set before the log is used

	// endPos and endSeq are the log's published end, for lag accounting.
	endPos atomic.Uint64
	endSeq atomic.Uint64
	// tailPos is the start of the retained part (tail), and retaining
	// whether retention is on, for the slow-consumer scan.
	tailPos   atomic.Uint64
	retaining atomic.Bool

	// wake, when set, runs after every publish and at close, with mu
	// unlocked: it runs the writers parked at the log's old end, given
	// the number of bytes published.
	wake   func(published int)
	closed atomic.Bool
}

func newLog(cd codec) *log {
	l := &log{head: newChunk(chunkSize, 1, 0), codec: cd}
	l.tail = l.head
	l.endSeq.Store(1)
	return l
}

// append encodes lines into the log and publishes them at once. It returns
// the sequence number of the first line.
func (l *log) append(lines [][]byte) (first uint64) {
	l.mu.Lock()
	defer l.wakeWriters(l.endPos.Load())
	defer l.mu.Unlock()
	_, published := l.head.published()
	first = l.head.firstSeq + published
	for _, line := range lines {
		l.reserveLocked(l.codec.maxSize(len(line)))
		h := l.head
		n, count := h.published()
		out, ok := l.codec.encodeLocked(h.buf[n:n:len(h.buf)], line, h.firstSeq+count)
		if !ok {
			continue
		}
		h.state.Store(uint64(n+len(out))<<32 | (count + 1))
	}
	l.publishLocked()
	l.codec.appendedLocked(l)
	return first
}

// appendAt is append for lines whose first has sequence number first,
// which must not be behind the log's end: a first beyond it leaves a gap,
// which the log starts a fresh chunk for (so a chunk's lines are always
// consecutive) and the codec may mark (gapLocked).
func (l *log) appendAt(first uint64, lines [][]byte) error {
	l.mu.Lock()
	next := l.endSeq.Load()
	if first < next {
		l.mu.Unlock()
		return fmt.Errorf("%w: line %d published, the log is at %d", ErrSequence, first, next)
	}
	if first > next {
		l.skipToLocked(first)
	}
	l.mu.Unlock()
	l.append(lines)
	return nil
}

// skipToLocked moves the log's end to sequence number seq, past lines it
// never had.
func (l *log) skipToLocked(seq uint64) {
	from := l.endSeq.Load()
	// The codec's mark goes before the jump, so that a client resuming
	// after it is not told of the gap twice.
	l.codec.gapLocked(l, from, seq-1)
	h := l.head
	n, _ := h.published()
	next := newChunk(chunkSize, seq, h.startPos+uint64(n))
	next.lastAt = h.lastAt
	l.codec.chunkLocked(h, next)
	h.next.Store(next)
	l.head = next
	l.publishLocked()
}

// appendMessage encodes a typed message into the log and publishes it,
// like append. It encodes into a buffer of its own first, which costs an
// allocation that the feed's lines do not pay.
func (l *log) appendMessage(m *message.Message) (seq uint64) {
	l.mu.Lock()
	defer l.wakeWriters(l.endPos.Load())
	defer l.mu.Unlock()
	enc, ok := l.codec.encodeMessageLocked(nil, m, l.endSeq.Load())
	l.reserveLocked(len(enc))
	h := l.head
	n, count := h.published()
	seq = h.firstSeq + count
	if ok {
		copy(h.buf[n:], enc)
		h.state.Store(uint64(n+len(enc))<<32 | (count + 1))
	}
	l.publishLocked()
	l.codec.appendedLocked(l)
	return seq
}

// appendRawLocked appends bytes that are no line, such as a checkpoint
// frame, made by f in at most max bytes, and publishes them. They take no
// sequence number.
func (l *log) appendRawLocked(max int, f func(dst []byte) []byte) {
	l.reserveLocked(max)
	h := l.head
	n, count := h.published()
	out := f(h.buf[n:n:len(h.buf)])
	if len(out) == 0 {
		return
	}
	h.state.Store(uint64(n+len(out))<<32 | count)
	l.publishLocked()
}

// reserveLocked makes sure the head chunk has room for need more bytes,
// moving to a fresh chunk (large enough) when it has not. Each write into
// the chunk is published at once, so the bytes appended by one call stay
// in one chunk, as readers expect whole encodings.
func (l *log) reserveLocked(need int) {
	h := l.head
	n, count := h.published()
	if n+need <= len(h.buf) {
		return
	}
	next := newChunk(max(chunkSize, need), h.firstSeq+count, h.startPos+uint64(n))
	next.lastAt = h.lastAt
	l.codec.chunkLocked(h, next)
	h.next.Store(next)
	l.head = next
}

// publishLocked updates the log's end. The caller wakes the writers once
// it has unlocked mu (wakeWriters).
func (l *log) publishLocked() {
	h := l.head
	n, count := h.published()
	l.endPos.Store(h.startPos + uint64(n))
	l.endSeq.Store(h.firstSeq + count)
	now := time.Now().UnixNano()
	h.lastAt = now
	l.trimLocked(now)
}

// wakeWriters wakes every writer waiting for data, telling it how much
// was published since from, the log's end before the publish. Publishers
// call it after unlocking mu, as the writers may run on their goroutine.
func (l *log) wakeWriters(from uint64) {
	if l.wake != nil {
		l.wake(int(l.endPos.Load() - from))
	}
}

// close marks the log finished: writers drain what is published and stop.
// The codec appends its last bytes first (a final checkpoint).
func (l *log) close() {
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		return
	}
	from := l.endPos.Load()
	l.codec.closingLocked(l)
	l.closed.Store(true)
	l.mu.Unlock()
	l.wakeWriters(from)
}

// join returns a cursor at the published end of the log, where a newly
// registered client starts, and the codec's private first bytes for that
// client, made at the same point of the log.
func (l *log) join() (cursor, joined, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, lines := l.head.published()
	j, err := l.codec.joinLocked()
	return cursor{c: l.head, off: n, seq: l.head.firstSeq + lines}, j, err
}

// next returns the published bytes at cur, at most one chunk's worth, and
// the cursor after them. It returns no bytes when cur is at the end.
func (cur cursor) next() ([]byte, cursor) {
	for {
		c := cur.c
		nxt := c.next.Load() // load before state: once set, state is final
		n, lines := c.published()
		if cur.off < n {
			return c.buf[cur.off:n], cursor{c: c, off: n, seq: c.firstSeq + lines}
		}
		if nxt == nil {
			return nil, cur
		}
		cur = cursor{c: nxt, off: 0, seq: nxt.firstSeq}
	}
}
