package broadcast

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Retention bounds the part of the log a server keeps for clients that
// resume from a sequence number (and for pool slots whose next worker
// carries on): the most recent lines, within every limit that is set.
// Whole chunks are released, the oldest first, never part of one, and the
// chunk being appended to is always kept. Bytes 0 turns retention off: the
// log then keeps only what its clients' cursors point into.
type Retention struct {
	Bytes int64         // the most bytes kept; 0: retention off
	Lines int64         // the most lines kept; 0: no limit by lines
	Age   time.Duration // lines older than this are released; 0: no limit by age
}

// Retained is the range of the feed a server can still send.
type Retained struct {
	Stream string // the stream the sequence numbers belong to
	// First and Last are the sequence numbers of the oldest and newest
	// lines retained; First is Last+1 when nothing is.
	First, Last uint64
	Bytes       int64 // bytes of encoded lines retained
	Lines       int64 // lines retained
}

// ErrSequence is returned by PublishAt for lines behind the log's end.
var ErrSequence = errors.New("sequence number behind the log's end")

// NewStreamID returns a random stream identity: 16 characters of base32,
// lower case, unlike any other stream's in practice.
func NewStreamID() string {
	var b [10]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
}

// setRetention changes the limits; they apply from the next append, or
// the next call of retained.
func (l *log) setRetention(r Retention) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retain = r
	l.trimLocked(time.Now().UnixNano())
}

// trimLocked releases the oldest chunks while the log holds more than its
// retention allows; with retention off, everything before the head.
func (l *log) trimLocked(now int64) {
	r := l.retain
	defer func() { l.tailPos.Store(l.tail.startPos) }()
	l.retaining.Store(r.Bytes > 0)
	if r.Bytes <= 0 {
		l.tail = l.head
		return
	}
	endPos, endSeq := l.endPos.Load(), l.endSeq.Load()
	for l.tail != l.head {
		t := l.tail
		over := endPos-t.startPos > uint64(r.Bytes) ||
			(r.Lines > 0 && endSeq-t.firstSeq > uint64(r.Lines)) ||
			(r.Age > 0 && now-t.lastAt > int64(r.Age))
		if !over {
			return
		}
		l.tail = t.next.Load()
	}
}

// retained trims the log to its retention now and reports what it holds.
func (l *log) retained() Retained {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trimLocked(time.Now().UnixNano())
	return l.retainedLocked()
}

func (l *log) retainedLocked() Retained {
	t := l.tail
	first := t.firstSeq
	if n, lines := t.published(); n == 0 && lines == 0 {
		// An empty tail (the head, just made): its number is the next line's.
		first = l.endSeq.Load()
	}
	end := l.endSeq.Load()
	return Retained{
		Stream: l.stream,
		First:  first,
		Last:   end - 1,
		Bytes:  int64(l.endPos.Load() - t.startPos),
		Lines:  int64(end - first),
	}
}

// seekStart says where a resuming client asked to start.
type seekStart struct {
	seq   uint64 // from this sequence number, unless one of the others
	first bool   // from the oldest line retained
	since int64  // from the lines appended at or after this time (Unix nanoseconds); 0: not by time
}

// seekResult is where a resuming client starts.
type seekResult struct {
	cur cursor // the log's position of the first line to send
	// gap is the lines asked for that the log no longer holds (or never
	// had); empty when none.
	gap gapRange
}

// errAhead is returned by seek for a sequence number the log has not
// reached: the client's numbers are not this stream's.
var errAhead = errors.New("sequence number ahead of the stream")

// seekLocked finds the position of the line where a resuming client
// starts. Chunks are walked from the tail, and within the chunk the
// codec skips encoded lines: about a millisecond for the worst case of a
// 64 MiB retention, paid once per resuming client.
func (l *log) seekLocked(at seekStart) (seekResult, error) {
	l.trimLocked(time.Now().UnixNano())
	end := l.endSeq.Load()
	c := l.tail
	seq := at.seq
	switch {
	case at.first:
		seq = c.firstSeq
	case at.since != 0:
		// The oldest chunk holding a line as recent as since: at most one
		// chunk's lines older than since come along, none newer is missed.
		for c != l.head && c.lastAt < at.since {
			c = c.next.Load()
		}
		seq = c.firstSeq
		if c.lastAt < at.since {
			seq = end // nothing as recent: from the next line
		}
	}
	if seq > end {
		return seekResult{}, fmt.Errorf("%w: line %d asked for, the stream's next is %d", errAhead, seq, end)
	}
	res := seekResult{gap: gapRange{From: 1, To: 0}}
	if seq < c.firstSeq {
		res.gap = gapRange{From: seq, To: c.firstSeq - 1}
		seq = c.firstSeq
	}
	for {
		nxt := c.next.Load()
		if nxt == nil || nxt.firstSeq > seq {
			break
		}
		c = nxt
	}
	n, lines := c.published()
	if seq >= c.firstSeq+lines {
		// In a gap after c's lines (appendAt), or at the log's end.
		nxt := c.next.Load()
		if nxt == nil {
			res.cur = cursor{c: c, off: n, seq: c.firstSeq + lines}
			return res, nil
		}
		if res.gap.empty() {
			res.gap.From = seq
		}
		res.gap.To = nxt.firstSeq - 1
		res.cur = cursor{c: nxt, off: 0, seq: nxt.firstSeq}
		return res, nil
	}
	off := l.codec.skip(c.buf[:n], seq-c.firstSeq)
	res.cur = cursor{c: c, off: off, seq: seq}
	return res, nil
}

// retainedFrom returns the log position from which the retention holds
// the log, or the log's end when retention is off: a client behind it
// pins memory of its own.
func (l *log) retainedFrom() uint64 {
	if !l.retaining.Load() {
		return l.endPos.Load()
	}
	return l.tailPos.Load()
}

// withinRetention reports whether the client's writer is at or after
// from, a position from retainedFrom.
func (c *client) withinRetention(from uint64) bool {
	return c.w.sentPos.Load() >= from
}
