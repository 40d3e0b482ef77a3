package broadcast

import (
	"errors"
	"fmt"
	"time"

	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/sirupsen/logrus"
)

// A signed client resumes with a RESUME frame (docs/protocol.md,
// "Resuming a stream"), its first after its AUTH, or its first at all on
// a listener without authentication. The server starts every signed
// client at the live end as soon as it may be sent anything, as it
// cannot know whether a RESUME is coming without making every other
// client wait; the RESUME then restarts the writer where it asks: its
// reader finds the position in the log and signs a RESUMED for it, and
// hands both to the writer (client.w.restart), which takes them at its
// next write, between two frames. The client's Verifier passes over what
// came before the RESUMED.

// restart is a resumed client's new start: where its writer goes on, and
// the RESUMED it sends first.
type restart struct {
	cur      cursor
	preamble []byte
}

// restartAt moves the writer to r and accounts for it as the client's
// start. It runs on the writer, which owns cur and the preamble; the
// client sends no ACK before its RESUMED, so the acks start afresh.
func (c *client) restartAt(r *restart) cursor {
	c.w.preamble = r.preamble
	c.w.sentSeq.Store(r.cur.seq)
	c.w.sentPos.Store(r.cur.pos())
	c.w.writingSeq.Store(r.cur.seq)
	c.firstSeq.Store(r.cur.seq)
	c.acks.mu.Lock()
	c.acks.nextSeq.Store(r.cur.seq)
	c.acks.lastGood.Store(r.cur.seq - 1)
	c.acks.mu.Unlock()
	return r.cur
}

// errSignedNumbering refuses a resume on a signed server whose messages
// are not numbered as its log's lines (lines published at sequence
// numbers of their own, PublishAt or SetStart): its numbers could not be
// told apart.
var errSignedNumbering = errors.New("the signed listener's message numbers are not the stream's sequence numbers; it cannot resume")

// resume answers a client's RESUME: it hands the writer its new start,
// counts it (and its gap) with the other resuming clients, and logs
// where that is. It reports false once the client is closed.
func (r *frameReader) resume(f signed.Frame) bool {
	c := r.c
	if r.spoke {
		c.rejectFrame(&signed.RejectError{Reason: signed.ReasonUnexpected, Kind: signed.KindResume, Offset: f.Offset,
			Detail: "a RESUME after the connection's first frame: send it first (after AUTH)"})
		return false
	}
	r.spoke = true
	q, err := signed.ParseResume(f)
	if err != nil {
		c.rejectFrame(err)
		return false
	}
	rs, res, err := c.srv.resumeSigned(c.session, q)
	if err != nil {
		if c.disconnect(closeRejected) {
			c.log().WithError(err).Error("Signed client cannot resume, disconnecting")
		}
		return false
	}
	c.w.restart.Store(rs)
	c.wakeWriterFromReader()
	c.srv.resumed.Add(1)
	fields := logrus.Fields{"asked": q.From.String(), "result": res.Result.String(), "from": res.Anchor.Seq + 1}
	switch q.From {
	case signed.FromSeq:
		fields["asked_seq"], fields["asked_stream"] = q.Seq, q.Stream
	case signed.FromSince:
		fields["asked_since"] = q.Since.UTC().Format(time.RFC3339Nano)
	}
	if from, to, ok := res.Gap(); ok {
		c.srv.gaps.Add(1)
		c.srv.gapLines.Add(to - from + 1)
		fields["gap_from"], fields["gap_to"] = from, to
	}
	c.log().WithFields(fields).Info("Signed client resumed")
	return true
}

// resumeSigned finds where a RESUME of the connection of session starts
// and signs the RESUMED for that point: the message before it, and in
// the Chained mode the chain digest after that message, found from the
// digest at its chunk's start. A stream the client names that is not
// this one, or a sequence number ahead of it, starts it at the oldest
// line retained (live for FromNext, from the time for FromSince), told
// so.
func (s *Server) resumeSigned(session signed.Session, q signed.ResumeRequest) (*restart, signed.Resumed, error) {
	l := s.lines
	sc := l.codec.(*signedCodec)
	l.mu.Lock()
	name := l.stream
	if name == "" {
		// A server given no stream name (SetStream): the signed
		// stream's own id names it.
		name = sc.enc.StreamID().String()
	}
	if l.endSeq.Load()-1 != sc.enc.Seq() {
		l.mu.Unlock()
		return nil, signed.Resumed{}, errSignedNumbering
	}
	result := signed.ResumedAsAsked
	if q.Stream != "" && q.Stream != name {
		result = signed.ResumedOtherStream
	}
	var at seekStart
	switch {
	case q.From == signed.FromNext:
		at.seq = l.endSeq.Load()
	case q.From == signed.FromSince:
		// A time is no stream's number: it holds whatever the stream.
		at.since = max(q.Since.UnixNano(), 1)
	case q.From == signed.FromFirst || result == signed.ResumedOtherStream:
		at.first = true
	default:
		at.seq = q.Seq
	}
	res, err := l.seekLocked(at)
	if errors.Is(err, errAhead) {
		// Numbers ahead of this stream are another stream's.
		result = signed.ResumedOtherStream
		res, err = l.seekLocked(seekStart{first: true})
	}
	if err != nil {
		l.mu.Unlock()
		return nil, signed.Resumed{}, err
	}
	if result == signed.ResumedAsAsked && q.From == signed.FromSeq && res.cur.seq != q.Seq {
		result = signed.ResumedGap
	}
	cur := res.cur
	head := signed.ChainHeadAt(cur.c.buf[:cur.off], cur.c.head)
	l.mu.Unlock()
	r := signed.Resumed{
		Anchor:  signed.AnchorInfo{Session: session, Seq: cur.seq - 1, Head: head},
		Request: q,
		Result:  result,
		Stream:  name,
	}
	frame, err := sc.enc.AppendResumed(nil, r)
	if err != nil {
		return nil, r, fmt.Errorf("sign the RESUMED: %w", err)
	}
	return &restart{cur: cur, preamble: frame}, r, nil
}
