package signed

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Resuming a stream, RESUME then RESUMED: docs/protocol.md, "Resuming a
// stream".

// ResumeFrom says where a RESUME asks the stream to start.
type ResumeFrom uint8

// Where a RESUME may ask to start.
const (
	FromSeq   ResumeFrom = 1 // at message Seq of the named stream
	FromFirst ResumeFrom = 2 // at the oldest message the daemon retains
	FromNext  ResumeFrom = 3 // at the next message published: live
	FromSince ResumeFrom = 4 // at the messages published at or after Since still retained
)

// String returns "seq", "first", "next" or "since".
func (f ResumeFrom) String() string {
	switch f {
	case FromSeq:
		return "seq"
	case FromFirst:
		return "first"
	case FromNext:
		return "next"
	case FromSince:
		return "since"
	}
	return fmt.Sprintf("ResumeFrom(%d)", uint8(f))
}

// MaxStreamName is the longest stream name a RESUME or RESUMED carries.
const MaxStreamName = 64

// ResumeRequest is what a client's RESUME asks.
type ResumeRequest struct {
	// Nonce is the client's random for this request, which the RESUMED
	// answering it repeats under the daemon's signature, so that no
	// recorded answer can be replayed to it. Verifier.Resume draws it
	// when it is zero.
	Nonce [16]byte
	From  ResumeFrom
	// Seq is the first message wanted (FromSeq); 0 otherwise.
	Seq uint64
	// Since is the oldest time wanted (FromSince): the daemon starts with
	// the oldest block of its log holding a message as recent, so a few
	// older ones may come first. It goes where Seq goes on the wire, in
	// nanoseconds since the epoch; zero otherwise.
	Since time.Time
	// Stream is the daemon's stream name (chatty's stream id) that Seq
	// belongs to, as a RESUMED named it; "" for whatever stream the
	// daemon has now.
	Stream string
}

// ResumeResult is how the daemon answered a RESUME.
type ResumeResult uint8

// The answers to a RESUME.
const (
	// ResumedAsAsked: the connection starts where the client asked.
	ResumedAsAsked ResumeResult = 1
	// ResumedGap: the daemon no longer holds messages Seq to the
	// RESUMED's seq; the connection starts with the oldest it holds.
	ResumedGap ResumeResult = 2
	// ResumedOtherStream: the stream the client named is not the
	// daemon's, or its Seq is ahead of the daemon's stream: its numbers
	// mean nothing here. The connection starts with the oldest message held (from
	// FromSeq or FromFirst) or live (FromNext).
	ResumedOtherStream ResumeResult = 3
)

// String returns "as-asked", "gap" or "other-stream".
func (r ResumeResult) String() string {
	switch r {
	case ResumedAsAsked:
		return "as-asked"
	case ResumedGap:
		return "gap"
	case ResumedOtherStream:
		return "other-stream"
	}
	return fmt.Sprintf("ResumeResult(%d)", uint8(r))
}

// Resumed is what a RESUMED says: the connection's anchor at the point
// where it starts, the request it answers and how.
type Resumed struct {
	Anchor  AnchorInfo // as an ANCHOR's; the first message sent is Anchor.Seq + 1
	Request ResumeRequest
	Result  ResumeResult
	// Stream is the daemon's stream name, which the client keeps with
	// the last sequence number it delivered to resume later.
	Stream string
}

// Gap returns the messages the client asked for that the daemon no
// longer holds, for a ResumedGap.
func (r *Resumed) Gap() (from, to uint64, ok bool) {
	if r.Result != ResumedGap {
		return 0, 0, false
	}
	return r.Request.Seq, r.Anchor.Seq, true
}

// Sizes of the resume frames' bodies, without the stream names.
const (
	resumeFixed  = 16 + 1 + 8 + 1                                     // nonce, from, seq, name length
	resumedFixed = 16 + 16 + 1 + 8 + 8 + 32 + 16 + 1 + 8 + 1 + 1 + 64 // stream, session, mode, seq, time, head, nonce, from, asked, result, name length, sig
)

const labelResumed = "chatty-signed-v1 resumed"

// ErrInvalidResume is wrapped by the errors for a ResumeRequest or a
// Resumed that cannot be framed.
var ErrInvalidResume = errors.New("invalid resume")

// checkName checks a stream name: at most MaxStreamName ASCII letters,
// digits, '-', '_' and '.', as chatty's stream ids are on every listener.
func checkName(s string) error {
	if len(s) > MaxStreamName {
		return fmt.Errorf("stream name of %d bytes, more than %d", len(s), MaxStreamName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("stream name %q: byte 0x%02x is not a letter, a digit, '-', '_' or '.'", s, c)
		}
	}
	return nil
}

// check reports what is wrong with the request, if anything.
func (r *ResumeRequest) check() error {
	switch r.From {
	case FromSeq:
		if r.Seq == 0 {
			return errors.New("from seq 0: sequence numbers start at 1")
		}
		if !r.Since.IsZero() {
			return errors.New("a time with from seq: only from since has one")
		}
	case FromFirst, FromNext:
		if r.Seq != 0 || !r.Since.IsZero() {
			return fmt.Errorf("seq %d or a time with from %v: only from seq and since have one", r.Seq, r.From)
		}
	case FromSince:
		if r.Seq != 0 {
			return fmt.Errorf("seq %d with from since: only from seq has one", r.Seq)
		}
		if r.Since.UnixNano() <= 0 {
			return fmt.Errorf("from since %s: want a time after 1970", r.Since.UTC().Format(time.RFC3339Nano))
		}
	default:
		return fmt.Errorf("from %d: want 1 (seq), 2 (first), 3 (next) or 4 (since)", uint8(r.From))
	}
	return checkName(r.Stream)
}

// AppendResume appends the RESUME frame of r.
func AppendResume(dst []byte, r ResumeRequest) ([]byte, error) {
	if err := r.check(); err != nil {
		return dst, fmt.Errorf("%w: %v", ErrInvalidResume, err)
	}
	dst = appendHeader(dst, KindResume, resumeFixed+len(r.Stream))
	dst = append(dst, r.Nonce[:]...)
	dst = append(dst, byte(r.From))
	dst = appendU64(dst, r.asked())
	dst = append(dst, byte(len(r.Stream)))
	return append(dst, r.Stream...), nil
}

// ParseResume reads a RESUME frame. Its error is a *RejectError.
func ParseResume(f Frame) (ResumeRequest, error) {
	if f.Kind != KindResume {
		return ResumeRequest{}, &RejectError{Reason: ReasonUnexpected, Kind: f.Kind, Offset: f.Offset, Detail: "not a RESUME"}
	}
	b := f.Body
	fail := func(format string, args ...any) (ResumeRequest, error) {
		return ResumeRequest{}, &RejectError{Reason: ReasonMalformed, Kind: KindResume, Offset: f.Offset, Detail: fmt.Sprintf(format, args...)}
	}
	if len(b) < resumeFixed {
		return fail("body of %d bytes, shorter than %d", len(b), resumeFixed)
	}
	var r ResumeRequest
	copy(r.Nonce[:], b[0:16])
	r.From = ResumeFrom(b[16])
	r.Seq = binary.BigEndian.Uint64(b[17:25])
	if r.From == FromSince {
		r.Since, r.Seq = time.Unix(0, int64(r.Seq)), 0
	}
	if n := int(b[25]); len(b) != resumeFixed+n {
		return fail("body of %d bytes, want %d for a stream name of %d", len(b), resumeFixed+n, n)
	}
	r.Stream = string(b[resumeFixed:])
	if err := r.check(); err != nil {
		return fail("%v", err)
	}
	return r, nil
}

// asked returns what a RESUME carries in its seq field: Seq, or Since in
// nanoseconds.
func (r *ResumeRequest) asked() uint64 {
	if r.From == FromSince {
		return uint64(r.Since.UnixNano())
	}
	return r.Seq
}

// appendCanonicalResumed appends
//
//	label("chatty-signed-v1 resumed") stream[16] session[16] mode:u8 seq:u64 time:i64 head[32]
//	nonce[16] from:u8 asked:u64 result:u8 name-length:u8 name
//
// which is also the RESUMED body without its signature.
func appendCanonicalResumed(b []byte, r *Resumed, ts int64) []byte {
	b = appendLabel(b, labelResumed)
	return appendResumedFields(b, r, ts)
}

func appendResumedFields(b []byte, r *Resumed, ts int64) []byte {
	a := &r.Anchor
	b = append(b, a.Stream[:]...)
	b = append(b, a.Session[:]...)
	b = append(b, byte(a.Mode))
	b = appendU64(b, a.Seq)
	b = appendU64(b, uint64(ts))
	b = append(b, a.Head[:]...)
	b = append(b, r.Request.Nonce[:]...)
	b = append(b, byte(r.Request.From))
	b = appendU64(b, r.Request.asked())
	b = append(b, byte(r.Result))
	b = append(b, byte(len(r.Stream)))
	return append(b, r.Stream...)
}

// AppendResumed appends the RESUMED frame that answers r.Request: signed
// now, it anchors the connection of session r.Anchor.Session after
// message r.Anchor.Seq, whose chain digest (Chained mode) is
// r.Anchor.Head. The Encoder's stream and mode replace r.Anchor's. The
// caller takes Seq and Head from the point of its log where the
// connection goes on, so it need not be the Encoder's end; like
// AppendResponse it reads only what never changes after NewEncoder, so
// it may be called from any goroutine.
func (e *Encoder) AppendResumed(dst []byte, r Resumed) ([]byte, error) {
	if err := r.Request.check(); err != nil {
		return dst, fmt.Errorf("%w: request: %v", ErrInvalidResume, err)
	}
	if err := checkName(r.Stream); err != nil || r.Stream == "" {
		return dst, fmt.Errorf("%w: the daemon's stream must have a name: %v", ErrInvalidResume, err)
	}
	if r.Result < ResumedAsAsked || r.Result > ResumedOtherStream {
		return dst, fmt.Errorf("%w: result %d", ErrInvalidResume, uint8(r.Result))
	}
	if e.mode != Chained {
		r.Anchor.Head = Digest{}
	}
	r.Anchor.Stream, r.Anchor.Mode = e.stream, e.mode
	ts := e.now().UnixNano()
	d := sum(appendCanonicalResumed(nil, &r, ts))
	sig := ed25519.Sign(e.priv, d[:])
	dst = appendHeader(dst, KindResumed, resumedFixed+len(r.Stream))
	dst = appendResumedFields(dst, &r, ts)
	return append(dst, sig...), nil
}

// Resume makes the RESUME frame that asks the daemon to start this
// connection where r says, and makes the Verifier expect its answer: it
// then passes over, without delivering, the frames the daemon sends
// before the RESUMED (an ANCHOR at the live end and what follows it,
// when the daemon had started the connection before the RESUME came),
// and verifies everything after the RESUMED as after an ANCHOR. The
// client sends the frame as its first (after its AUTH, when the daemon
// asks for one). A zero r.Nonce is drawn from crypto/rand.
func (v *Verifier) Resume(r ResumeRequest) ([]byte, error) {
	switch {
	case v.resuming || v.resumedOK:
		return nil, errors.New("signed: a connection resumes once")
	case v.stats.Verified > 0 || len(v.pend) > 0:
		return nil, errors.New("signed: too late to resume: messages of this connection were received already")
	}
	if r.Nonce == ([16]byte{}) {
		if _, err := io.ReadFull(rand.Reader, r.Nonce[:]); err != nil {
			return nil, fmt.Errorf("signed: draw a nonce: %w", err)
		}
	}
	frame, err := AppendResume(nil, r)
	if err != nil {
		return nil, err
	}
	v.request, v.resuming = r, true
	return frame, nil
}

// Resumed returns what the RESUMED answering the Verifier's RESUME said,
// once it has verified.
func (v *Verifier) Resumed() (Resumed, bool) { return v.resumed, v.resumedOK }

// resumedFrame checks a RESUMED: signed by the daemon, in time, the
// answer to this Verifier's request, of the session and stream of the
// CHALLENGE or ANCHOR before it. It then anchors the stream.
func (v *Verifier) resumedFrame(b []byte, now int64, deliver func(*Message)) *RejectError {
	if !v.resuming {
		return reject(ReasonUnexpected, 0, "a RESUMED that answers no RESUME")
	}
	if len(b) < resumedFixed || len(b) != resumedFixed+int(b[resumedFixed-64-1]) {
		return reject(ReasonMalformed, 0, "body of %d bytes, not a RESUMED's", len(b))
	}
	var r Resumed
	a := &r.Anchor
	copy(a.Stream[:], b[0:16])
	copy(a.Session[:], b[16:32])
	a.Mode = Mode(b[32])
	a.Seq = binary.BigEndian.Uint64(b[33:41])
	ts := int64(binary.BigEndian.Uint64(b[41:49]))
	copy(a.Head[:], b[49:81])
	copy(r.Request.Nonce[:], b[81:97])
	from, asked := ResumeFrom(b[97]), binary.BigEndian.Uint64(b[98:106])
	r.Result = ResumeResult(b[106])
	n := int(b[107])
	r.Stream = string(b[108 : 108+n])
	sig := b[108+n:]
	q := &v.request
	if r.Request.Nonce != q.Nonce || from != q.From || asked != q.asked() {
		return reject(ReasonUnexpected, a.Seq, "RESUMED answers another request (from %v, %d), not this connection's", from, asked)
	}
	// The request's name is not carried: the nonce names the request.
	r.Request = *q
	v.scratch = appendCanonicalResumed(v.scratch[:0], &r, ts)
	d := sum(v.scratch)
	if !v.checkSignature(&d, sig) {
		return reject(ReasonBadSignature, a.Seq, "resumed signature does not verify with the daemon's key")
	}
	if !a.Mode.Valid() {
		return reject(ReasonMalformed, a.Seq, "unknown mode %d", b[32])
	}
	if err := checkName(r.Stream); err != nil || r.Stream == "" {
		return reject(ReasonMalformed, a.Seq, "the daemon's stream name: %v", err)
	}
	if re := v.checkTime(ts, now, a.Seq); re != nil {
		return re
	}
	if re := checkResult(&r); re != nil {
		return re
	}
	switch {
	case v.challenged && (a.Session != v.challenge.Session || a.Stream != v.challenge.Stream):
		return reject(ReasonUnexpected, a.Seq, "RESUMED of stream %v session %v after a CHALLENGE of stream %v session %v",
			a.Stream, a.Session, v.challenge.Stream, v.challenge.Session)
	case v.anchored && (a.Session != v.anchor.Session || a.Stream != v.anchor.Stream || a.Mode != v.anchor.Mode):
		return reject(ReasonUnexpected, a.Seq, "RESUMED of stream %v session %v after an ANCHOR of stream %v session %v",
			a.Stream, a.Session, v.anchor.Stream, v.anchor.Session)
	}
	a.Time = time.Unix(0, ts)
	v.resuming, v.resumedOK, v.resumed = false, true, r
	v.anchor, v.anchored = *a, true
	v.lastSeq, v.head = a.Seq, a.Head
	v.msg = Message{Kind: KindResumed, Seq: a.Seq, Time: a.Time}
	deliver(&v.msg)
	return nil
}

// checkResult checks that the result agrees with the request and the
// position: the daemon cannot claim to start where the client asked
// anywhere else, nor pass a start later than asked for anything but a
// gap or another stream.
func checkResult(r *Resumed) *RejectError {
	q, a := &r.Request, &r.Anchor
	switch r.Result {
	case ResumedAsAsked:
		if q.Stream != "" && q.Stream != r.Stream {
			return reject(ReasonUnexpected, a.Seq, "RESUMED as asked, of stream %q, for a request of stream %q", r.Stream, q.Stream)
		}
		if q.From == FromSeq && a.Seq+1 != q.Seq {
			return reject(ReasonUnexpected, a.Seq, "RESUMED as asked from seq %d starts at %d", q.Seq, a.Seq+1)
		}
	case ResumedGap:
		if q.From != FromSeq || (q.Stream != "" && q.Stream != r.Stream) || a.Seq+1 <= q.Seq {
			return reject(ReasonUnexpected, a.Seq, "RESUMED with a gap from seq %d of stream %q, starting at %d of stream %q", q.Seq, q.Stream, a.Seq+1, r.Stream)
		}
	case ResumedOtherStream:
		if q.From != FromSeq && (q.Stream == "" || q.Stream == r.Stream) {
			return reject(ReasonUnexpected, a.Seq, "RESUMED names another stream than %q, which the request named", r.Stream)
		}
	default:
		return reject(ReasonMalformed, a.Seq, "unknown result %d", uint8(r.Result))
	}
	return nil
}

// skipWhileResuming reports whether a frame of kind k is passed over,
// unverified and undelivered, because the Verifier awaits the RESUMED:
// the feed frames of the connection's start at the live end.
func (v *Verifier) skipWhileResuming(k Kind) bool {
	if !v.resuming {
		return false
	}
	switch k {
	case KindMessage, KindChained, KindCheckpoint:
		v.stats.Skipped++
		return true
	}
	return false
}

// ChainHeadAt returns the chain digest after the last message frame in
// frames, a run of whole frames of a Chained stream, or start when it has
// none: a daemon finds the chain at any point of its log from the digest
// at the start of the block holding it.
func ChainHeadAt(frames []byte, start Digest) Digest {
	head := start
	for off := 0; off+HeaderSize <= len(frames); {
		n := int(binary.BigEndian.Uint32(frames[off+2:]))
		body := frames[off+HeaderSize : min(off+HeaderSize+n, len(frames))]
		if Kind(frames[off+1]) == KindChained && len(body) >= chainedFixed {
			copy(head[:], body[17:49])
		}
		off += HeaderSize + n
	}
	return head
}
