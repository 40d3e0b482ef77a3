package signed

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

// DefaultTimestampWindow is how far a frame's time may be from the
// verifier's clock, either way, by default.
const DefaultTimestampWindow = 5 * time.Minute

// Default bounds on the chained messages a Verifier holds until their
// checkpoint arrives.
const (
	DefaultMaxPending      = 10000
	DefaultMaxPendingBytes = 16 << 20
)

// VerifierOptions are a Verifier's settings. The zero value is fine.
type VerifierOptions struct {
	// TimestampWindow is how far a frame's time may be from Now, either
	// way; 0 means DefaultTimestampWindow, a negative value disables the
	// check.
	TimestampWindow time.Duration
	// MaxBody bounds frame bodies; 0 means MaxBody.
	MaxBody int
	// MaxPending and MaxPendingBytes bound the chained messages awaiting
	// a checkpoint; 0 means the defaults.
	MaxPending      int
	MaxPendingBytes int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Cache, when set, answers signatures already checked (by any
	// Verifier sharing it) without checking them again; nil checks
	// every signature.
	Cache *SignatureCache
}

// Message is a message a Verifier delivers: a feed message that verified
// (KindMessage or KindChained), a response to this client (KindResponse),
// a PONG (KindPong, unsigned, Seq holding its nonce) or the daemon's
// CHALLENGE (KindChallenge, which the client answers with an AUTH; see
// Verifier.Challenge), or the RESUMED answering the client's RESUME
// (KindResumed, Seq the last message before the first to come; see
// Verifier.Resumed).
type Message struct {
	Kind    Kind
	Seq     uint64
	Type    message.Type
	Time    time.Time
	Payload []byte // valid only during the delivery call: copy it to keep it
	Request Digest // KindResponse: the digest of the request answered
}

// AnchorInfo is what a verified ANCHOR said about the stream.
type AnchorInfo struct {
	Stream  StreamID
	Session Session
	Mode    Mode
	Seq     uint64 // the last message before this connection's first
	Time    time.Time
	Head    Digest // the chain digest after message Seq (Chained)
}

// Stats are a Verifier's counters.
type Stats struct {
	Frames      uint64 // frames decoded
	Verified    uint64 // feed messages delivered as verified
	Responses   uint64 // responses delivered
	Checkpoints uint64 // checkpoints verified
	Pending     int    // chained messages awaiting their checkpoint
	Discarded   uint64 // pending messages dropped, never delivered, when the stream failed
	Skipped     uint64 // feed frames passed over before the RESUMED of a resuming connection
	Rejected    map[Reason]uint64
}

// Verifier is the client side of the signed protocol: it verifies a
// daemon's stream, fed in pieces of any size, and delivers only what
// verified. Its first rejection is final: every later Feed returns it,
// and the client should drop the connection. Not safe for concurrent use.
type Verifier struct {
	pub        ed25519.PublicKey
	dec        *Decoder
	window     int64 // nanoseconds; < 0: no check
	maxPending int
	maxBytes   int
	now        func() time.Time
	cache      *SignatureCache

	challenged bool
	challenge  Challenge

	anchored bool
	anchor   AnchorInfo

	// A resuming connection's request (Resume) and its answer.
	resuming  bool // a RESUME was made, its RESUMED is awaited
	request   ResumeRequest
	resumedOK bool
	resumed   Resumed
	lastSeq   uint64
	head      Digest

	pend  []pending // chained messages awaiting a checkpoint, in order
	arena []byte    // their payloads

	msg     Message // delivered, reused
	scratch []byte
	err     error
	stats   Stats
	reject  [numReasons]uint64
}

type pending struct {
	seq    uint64
	typ    message.Type
	ts     int64
	off, n int // payload in arena
}

// NewVerifier returns a Verifier of streams signed by pub.
func NewVerifier(pub ed25519.PublicKey, opts VerifierOptions) (*Verifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("signed: public key of %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	v := &Verifier{
		pub:        pub,
		dec:        newDaemonDecoder(opts.MaxBody),
		window:     int64(opts.TimestampWindow),
		maxPending: opts.MaxPending,
		maxBytes:   opts.MaxPendingBytes,
		now:        opts.Now,
		cache:      opts.Cache,
		scratch:    make([]byte, 0, 256),
	}
	if v.window == 0 {
		v.window = int64(DefaultTimestampWindow)
	}
	if v.maxPending <= 0 {
		v.maxPending = DefaultMaxPending
	}
	if v.maxBytes <= 0 {
		v.maxBytes = DefaultMaxPendingBytes
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Anchor returns what the stream's ANCHOR said, once it has verified. A
// client needs it to sign upstream messages (NewClientSigner).
func (v *Verifier) Anchor() (AnchorInfo, bool) { return v.anchor, v.anchored }

// Err returns the rejection that stopped the Verifier, or nil.
func (v *Verifier) Err() error { return v.err }

// Stats returns the counters.
func (v *Verifier) Stats() Stats {
	s := v.stats
	s.Pending = len(v.pend)
	s.Rejected = make(map[Reason]uint64)
	for r, n := range v.reject {
		if n != 0 {
			s.Rejected[Reason(r)] = n
		}
	}
	return s
}

// Feed verifies the next bytes of the stream and calls deliver, in stream
// order, for every message that has verified: at once in the PerMessage
// mode, when the covering checkpoint verifies in the Chained mode. The
// *Message and its Payload are reused after deliver returns. Feed returns
// the first rejection, a *RejectError, and stops there; messages pending
// then are discarded, never delivered.
func (v *Verifier) Feed(p []byte, deliver func(*Message)) error {
	if v.err != nil {
		return v.err
	}
	v.dec.Feed(p)
	now := v.now().UnixNano()
	for {
		f, ok, err := v.dec.Next()
		if err != nil {
			return v.fail(err.(*RejectError))
		}
		if !ok {
			return nil
		}
		v.stats.Frames++
		if re := v.frame(f, now, deliver); re != nil {
			re.Offset = f.Offset
			if re.Kind == 0 {
				re.Kind = f.Kind
			}
			return v.fail(re)
		}
	}
}

// Close ends the stream: it reports a stream cut inside a frame, and
// chained messages that no checkpoint covered (discarding them). A daemon
// that closes a stream cleanly checkpoints it first.
func (v *Verifier) Close() error {
	if v.err != nil {
		return v.err
	}
	if n := v.dec.Buffered(); n > 0 {
		return v.fail(&RejectError{Reason: ReasonTruncated, Offset: v.dec.Offset(), Detail: fmt.Sprintf("%d bytes of an incomplete frame", n)})
	}
	if v.resuming {
		return v.fail(&RejectError{Reason: ReasonTruncated, Offset: v.dec.Offset(), Kind: KindResumed,
			Detail: "the stream ended before the RESUMED answering this connection's RESUME"})
	}
	if len(v.pend) > 0 {
		return v.fail(&RejectError{Reason: ReasonUncovered, Offset: v.dec.Offset(), Seq: v.pend[0].seq,
			Detail: fmt.Sprintf("%d messages from seq %d never verified", len(v.pend), v.pend[0].seq)})
	}
	return nil
}

func (v *Verifier) fail(re *RejectError) error {
	v.err = re
	v.reject[re.Reason]++
	v.stats.Discarded += uint64(len(v.pend))
	v.pend, v.arena = v.pend[:0], v.arena[:0]
	return re
}

func reject(r Reason, seq uint64, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Seq: seq, Detail: fmt.Sprintf(format, args...)}
}

// frame checks one frame: first its integrity (digest, chain, signature),
// then its place in the stream (sequence, time).
func (v *Verifier) frame(f Frame, now int64, deliver func(*Message)) *RejectError {
	b := f.Body
	switch f.Kind {
	case KindChallenge:
		return v.challengeFrame(b, now, deliver)
	case KindAnchor:
		return v.anchorFrame(b, now)
	case KindResumed:
		return v.resumedFrame(b, now, deliver)
	}
	if v.skipWhileResuming(f.Kind) {
		return nil
	}
	if !v.anchored {
		return reject(ReasonUnexpected, 0, "the stream must start with an ANCHOR")
	}
	switch f.Kind {
	case KindMessage:
		if v.anchor.Mode != PerMessage {
			return reject(ReasonUnexpected, 0, "MESSAGE in a %v stream", v.anchor.Mode)
		}
		return v.messageFrame(b, now, deliver)
	case KindChained:
		if v.anchor.Mode != Chained {
			return reject(ReasonUnexpected, 0, "CHAINED in a %v stream", v.anchor.Mode)
		}
		return v.chainedFrame(b, now)
	case KindCheckpoint:
		if v.anchor.Mode != Chained {
			return reject(ReasonUnexpected, 0, "CHECKPOINT in a %v stream", v.anchor.Mode)
		}
		return v.checkpointFrame(b, now, deliver)
	case KindResponse:
		return v.responseFrame(b, now, deliver)
	case KindPong:
		if len(b) != nonceSize {
			return reject(ReasonMalformed, 0, "body of %d bytes, want %d", len(b), nonceSize)
		}
		v.msg = Message{Kind: KindPong, Seq: binary.BigEndian.Uint64(b)}
		deliver(&v.msg)
		return nil
	}
	return reject(ReasonUnexpected, 0, "a client's frame from the daemon")
}

func (v *Verifier) anchorFrame(b []byte, now int64) *RejectError {
	if v.anchored {
		return reject(ReasonUnexpected, 0, "a second ANCHOR")
	}
	if len(b) != anchorSize {
		return reject(ReasonMalformed, 0, "body of %d bytes, want %d", len(b), anchorSize)
	}
	var a AnchorInfo
	copy(a.Stream[:], b[0:16])
	copy(a.Session[:], b[16:32])
	a.Mode = Mode(b[32])
	a.Seq = binary.BigEndian.Uint64(b[33:41])
	ts := int64(binary.BigEndian.Uint64(b[41:49]))
	copy(a.Head[:], b[49:81])
	sig := b[81:145]
	v.scratch = appendCanonicalAnchor(v.scratch[:0], &a.Stream, &a.Session, a.Mode, a.Seq, ts, &a.Head)
	d := sum(v.scratch)
	if !v.checkSignature(&d, sig) {
		return reject(ReasonBadSignature, a.Seq, "anchor signature does not verify with the daemon's key")
	}
	if !a.Mode.Valid() {
		return reject(ReasonMalformed, a.Seq, "unknown mode %d", b[32])
	}
	if re := v.checkTime(ts, now, a.Seq); re != nil {
		return re
	}
	if v.challenged && (a.Session != v.challenge.Session || a.Stream != v.challenge.Stream) {
		return reject(ReasonUnexpected, a.Seq, "ANCHOR of stream %v session %v after a CHALLENGE of stream %v session %v",
			a.Stream, a.Session, v.challenge.Stream, v.challenge.Session)
	}
	a.Time = time.Unix(0, ts)
	v.anchor, v.anchored = a, true
	v.lastSeq, v.head = a.Seq, a.Head
	return nil
}

// checkSeq checks that seq follows the last one.
func (v *Verifier) checkSeq(seq uint64) *RejectError {
	switch {
	case seq <= v.lastSeq:
		return reject(ReasonReplay, seq, "after seq %d", v.lastSeq)
	case seq != v.lastSeq+1:
		return reject(ReasonGap, seq, "after seq %d: %d messages missing", v.lastSeq, seq-v.lastSeq-1)
	}
	return nil
}

func (v *Verifier) checkTime(ts, now int64, seq uint64) *RejectError {
	return checkWindow(ts, now, v.window, seq)
}

// checkWindow checks that ts is within window of now; a negative window
// accepts any time.
func checkWindow(ts, now, window int64, seq uint64) *RejectError {
	if window < 0 {
		return nil
	}
	if d := ts - now; d > window || d < -window {
		return reject(ReasonTimestamp, seq, "time %s is %s from the local clock, more than %s",
			time.Unix(0, ts).UTC().Format(time.RFC3339Nano), time.Duration(d), time.Duration(window))
	}
	return nil
}

// messageHead parses the fixed start of MESSAGE and CHAINED bodies.
func messageHead(b []byte) (seq uint64, typ message.Type, ts int64, digest []byte) {
	return binary.BigEndian.Uint64(b[0:8]), message.Type(b[8]), int64(binary.BigEndian.Uint64(b[9:17])), b[17:49]
}

func (v *Verifier) messageFrame(b []byte, now int64, deliver func(*Message)) *RejectError {
	if len(b) < messageFixed {
		return reject(ReasonMalformed, 0, "body of %d bytes, shorter than %d", len(b), messageFixed)
	}
	seq, typ, ts, digest := messageHead(b)
	sig, payload := b[49:113], b[113:]
	if len(payload) > MaxPayload {
		return reject(ReasonOversized, seq, "payload of %d bytes", len(payload))
	}
	v.scratch = appendCanonicalMessage(v.scratch[:0], &v.anchor.Stream, seq, typ, ts, payload)
	d := sum(v.scratch)
	if !bytes.Equal(d[:], digest) {
		return reject(ReasonBadDigest, seq, "carried %x, computed %s", digest, d)
	}
	if !v.checkSignature(&d, sig) {
		return reject(ReasonBadSignature, seq, "does not verify with the daemon's key")
	}
	if re := v.checkHead(typ, seq, ts, now); re != nil {
		return re
	}
	v.lastSeq = seq
	v.stats.Verified++
	v.msg = Message{Kind: KindMessage, Seq: seq, Type: typ, Time: time.Unix(0, ts), Payload: payload}
	deliver(&v.msg)
	return nil
}

// checkHead checks what every message carries besides its digest: a
// known type, the next sequence number and a time inside the window.
func (v *Verifier) checkHead(typ message.Type, seq uint64, ts, now int64) *RejectError {
	if !typ.Valid() {
		return reject(ReasonMalformed, seq, "unknown message type %d", uint8(typ))
	}
	if re := v.checkSeq(seq); re != nil {
		return re
	}
	return v.checkTime(ts, now, seq)
}

func (v *Verifier) chainedFrame(b []byte, now int64) *RejectError {
	if len(b) < chainedFixed {
		return reject(ReasonMalformed, 0, "body of %d bytes, shorter than %d", len(b), chainedFixed)
	}
	seq, typ, ts, digest := messageHead(b)
	payload := b[49:]
	if len(payload) > MaxPayload {
		return reject(ReasonOversized, seq, "payload of %d bytes", len(payload))
	}
	v.scratch = appendChainPrefix(v.scratch[:0], &v.head)
	v.scratch = appendCanonicalMessage(v.scratch, &v.anchor.Stream, seq, typ, ts, payload)
	d := sum(v.scratch)
	if !bytes.Equal(d[:], digest) {
		return reject(ReasonBadChain, seq, "does not extend the chain after seq %d", v.lastSeq)
	}
	if re := v.checkHead(typ, seq, ts, now); re != nil {
		return re
	}
	if len(v.pend) >= v.maxPending || len(v.arena)+len(payload) > v.maxBytes {
		return reject(ReasonPendingOverflow, seq, "%d messages, %d bytes without a checkpoint", len(v.pend), len(v.arena))
	}
	v.pend = append(v.pend, pending{seq: seq, typ: typ, ts: ts, off: len(v.arena), n: len(payload)})
	v.arena = append(v.arena, payload...)
	v.lastSeq, v.head = seq, d
	return nil
}

func (v *Verifier) checkpointFrame(b []byte, now int64, deliver func(*Message)) *RejectError {
	if len(b) != checkpointSize {
		return reject(ReasonMalformed, 0, "body of %d bytes, want %d", len(b), checkpointSize)
	}
	seq := binary.BigEndian.Uint64(b[0:8])
	ts := int64(binary.BigEndian.Uint64(b[8:16]))
	var head Digest
	copy(head[:], b[16:48])
	sig := b[48:112]
	v.scratch = appendCanonicalCheckpoint(v.scratch[:0], &v.anchor.Stream, seq, ts, &head)
	d := sum(v.scratch)
	if !v.checkSignature(&d, sig) {
		return reject(ReasonBadSignature, seq, "checkpoint does not verify with the daemon's key")
	}
	switch {
	case seq < v.lastSeq:
		return reject(ReasonReplay, seq, "checkpoint behind seq %d", v.lastSeq)
	case seq > v.lastSeq:
		return reject(ReasonGap, seq, "checkpoint ahead of seq %d: %d messages missing", v.lastSeq, seq-v.lastSeq)
	case head != v.head:
		return reject(ReasonBadChain, seq, "checkpoint head %x, chain %x", head, v.head)
	}
	if re := v.checkTime(ts, now, seq); re != nil {
		return re
	}
	v.stats.Checkpoints++
	for _, m := range v.pend {
		v.stats.Verified++
		v.msg = Message{Kind: KindChained, Seq: m.seq, Type: m.typ, Time: time.Unix(0, m.ts), Payload: v.arena[m.off : m.off+m.n]}
		deliver(&v.msg)
	}
	v.pend, v.arena = v.pend[:0], v.arena[:0]
	return nil
}

func (v *Verifier) responseFrame(b []byte, now int64, deliver func(*Message)) *RejectError {
	if len(b) < responseFixed {
		return reject(ReasonMalformed, 0, "body of %d bytes, shorter than %d", len(b), responseFixed)
	}
	var req Digest
	copy(req[:], b[0:32])
	typ := message.Type(b[32])
	ts := int64(binary.BigEndian.Uint64(b[33:41]))
	digest, sig, payload := b[41:73], b[73:137], b[137:]
	if len(payload) > MaxPayload {
		return reject(ReasonOversized, 0, "payload of %d bytes", len(payload))
	}
	v.scratch = appendCanonicalResponse(v.scratch[:0], &v.anchor.Stream, &v.anchor.Session, &req, typ, ts, payload)
	d := sum(v.scratch)
	if !bytes.Equal(d[:], digest) {
		return reject(ReasonBadDigest, 0, "response carried %x, computed %s", digest, d)
	}
	if !v.checkSignature(&d, sig) {
		return reject(ReasonBadSignature, 0, "response does not verify with the daemon's key")
	}
	if !typ.Valid() {
		return reject(ReasonMalformed, 0, "unknown message type %d", uint8(typ))
	}
	if re := v.checkTime(ts, now, 0); re != nil {
		return re
	}
	v.stats.Responses++
	v.msg = Message{Kind: KindResponse, Type: typ, Time: time.Unix(0, ts), Payload: payload, Request: req}
	deliver(&v.msg)
	return nil
}
