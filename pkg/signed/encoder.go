package signed

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

// Mode is how feed messages are signed.
type Mode uint8

// The signing modes.
const (
	// PerMessage signs every message: each verifies on its own, at the
	// cost of one signature per message.
	PerMessage Mode = 1
	// Chained chains every message's digest to the previous one and signs
	// a checkpoint of the chain every so many messages or milliseconds.
	Chained Mode = 2
)

// String returns "per-message" or "chained", the names of the config.
func (m Mode) String() string {
	switch m {
	case PerMessage:
		return "per-message"
	case Chained:
		return "chained"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Valid reports whether m is a mode.
func (m Mode) Valid() bool { return m == PerMessage || m == Chained }

// ParseMode returns the mode named s ("per-message" or "chained").
func ParseMode(s string) (Mode, error) {
	switch s {
	case "per-message":
		return PerMessage, nil
	case "chained":
		return Chained, nil
	}
	return 0, fmt.Errorf("unknown signing mode %q: want per-message or chained", s)
}

// Default checkpoint spacing of the Chained mode.
const (
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 5 * time.Millisecond
)

// EncoderOptions are an Encoder's settings. The zero value is fine.
type EncoderOptions struct {
	// StreamID names the stream; zero means a random one, as it should be
	// for every run of the daemon. Tests set it for reproducible bytes.
	StreamID StreamID
	// CheckpointEvery and CheckpointInterval space the checkpoints of the
	// Chained mode: Append adds one after CheckpointEvery uncovered
	// messages, or when a message's time is CheckpointInterval or more
	// after the previous checkpoint's (or NewEncoder's). Zero means the
	// default.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// Now is the clock of ANCHOR and forced CHECKPOINT times; nil means
	// time.Now.
	Now func() time.Time
	// Rand draws stream ids and sessions; nil means crypto/rand.
	Rand io.Reader
}

// ErrInvalidMessage is wrapped by the errors of Append for a message that
// cannot be framed: an invalid type or a payload over MaxPayload.
var ErrInvalidMessage = errors.New("invalid message")

// Encoder is the daemon side of the signed protocol for one stream. It is
// not safe for concurrent use, except for AppendResponse: the caller
// serialises Append, Checkpoint and Anchor, naturally under the lock of
// the log it appends the frames to.
type Encoder struct {
	priv     ed25519.PrivateKey
	pub      ed25519.PublicKey
	mode     Mode
	stream   StreamID
	every    int
	interval int64 // nanoseconds
	now      func() time.Time
	rand     io.Reader

	seq       uint64 // last sequence number appended; 0 before the first
	head      Digest // chain digest of message seq (Chained)
	coveredTo uint64 // last sequence number covered by a checkpoint
	lastCheck int64  // time of the last checkpoint, Unix nanoseconds
	scratch   []byte // canonical encodings, reused
}

// NewEncoder returns an Encoder signing with priv in the given mode.
func NewEncoder(priv ed25519.PrivateKey, mode Mode, opts EncoderOptions) (*Encoder, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signed: private key of %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	if !mode.Valid() {
		return nil, fmt.Errorf("signed: invalid mode %v", mode)
	}
	e := &Encoder{
		priv:     priv,
		pub:      priv.Public().(ed25519.PublicKey),
		mode:     mode,
		stream:   opts.StreamID,
		every:    opts.CheckpointEvery,
		interval: int64(opts.CheckpointInterval),
		now:      opts.Now,
		rand:     opts.Rand,
		scratch:  make([]byte, 0, 256),
	}
	if e.every <= 0 {
		e.every = DefaultCheckpointEvery
	}
	if e.interval <= 0 {
		e.interval = int64(DefaultCheckpointInterval)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.rand == nil {
		e.rand = rand.Reader
	}
	e.lastCheck = e.now().UnixNano()
	if e.stream == (StreamID{}) {
		if _, err := io.ReadFull(e.rand, e.stream[:]); err != nil {
			return nil, fmt.Errorf("signed: draw a stream id: %w", err)
		}
	}
	return e, nil
}

// Mode returns the signing mode.
func (e *Encoder) Mode() Mode { return e.mode }

// StreamID returns the stream's id.
func (e *Encoder) StreamID() StreamID { return e.stream }

// PublicKey returns the key that verifies the stream.
func (e *Encoder) PublicKey() ed25519.PublicKey { return e.pub }

// Seq returns the sequence number of the last message appended, 0 before
// the first.
func (e *Encoder) Seq() uint64 { return e.seq }

// SkipTo makes next the sequence number of the next message appended: a
// stream numbered from elsewhere (a shared feed) starts there, or jumps
// over numbers it never had. Messages appended before must all be
// covered (Checkpoint). A client verifying across a jump rejects it as a
// gap: messages are missing; one that resumes after it is told of it by
// its RESUMED.
func (e *Encoder) SkipTo(next uint64) error {
	switch {
	case next <= e.seq:
		return fmt.Errorf("signed: skip to seq %d, not after the last message %d", next, e.seq)
	case e.Uncovered() > 0:
		return fmt.Errorf("signed: skip to seq %d with %d messages uncovered: checkpoint first", next, e.Uncovered())
	}
	e.seq = next - 1
	e.coveredTo = e.seq
	return nil
}

// Head returns the chain digest after the last message appended (Chained
// mode; zero before the first, and always in the PerMessage mode).
func (e *Encoder) Head() Digest { return e.head }

// Uncovered returns the number of chained messages no checkpoint covers
// yet. While it is not 0 the caller should make sure Checkpoint is called
// within the checkpoint interval, so an idle feed does not leave messages
// pending in the clients.
func (e *Encoder) Uncovered() int { return int(e.seq - e.coveredTo) }

// Append appends the frame of the next message to dst and returns it with
// the message's sequence number (the previous one plus one, from 1). In
// the Chained mode it may append a CHECKPOINT frame after the message.
// It allocates nothing but what growing dst takes. On error dst is
// returned unchanged.
func (e *Encoder) Append(dst []byte, typ message.Type, ts time.Time, payload []byte) ([]byte, uint64, error) {
	if !typ.Valid() {
		return dst, 0, fmt.Errorf("%w: type %d", ErrInvalidMessage, uint8(typ))
	}
	if len(payload) > MaxPayload {
		return dst, 0, fmt.Errorf("%w: payload of %d bytes, more than %d", ErrInvalidMessage, len(payload), MaxPayload)
	}
	seq := e.seq + 1
	t := ts.UnixNano()
	if e.mode == PerMessage {
		e.scratch = appendCanonicalMessage(e.scratch[:0], &e.stream, seq, typ, t, payload)
		d := sum(e.scratch)
		sig := ed25519.Sign(e.priv, d[:])
		dst = appendHeader(dst, KindMessage, messageFixed+len(payload))
		dst = appendMessageHead(dst, seq, typ, t, &d)
		dst = append(dst, sig...)
		dst = append(dst, payload...)
		e.seq = seq
		e.coveredTo = seq
		return dst, seq, nil
	}
	e.scratch = appendChainPrefix(e.scratch[:0], &e.head)
	e.scratch = appendCanonicalMessage(e.scratch, &e.stream, seq, typ, t, payload)
	e.head = sum(e.scratch)
	e.seq = seq
	dst = appendHeader(dst, KindChained, chainedFixed+len(payload))
	dst = appendMessageHead(dst, seq, typ, t, &e.head)
	dst = append(dst, payload...)
	if e.Uncovered() >= e.every || t-e.lastCheck >= e.interval {
		dst = e.appendCheckpoint(dst, t)
	}
	return dst, seq, nil
}

// MaxAppendSize returns the most bytes one Append adds for a payload of
// n bytes: a message frame and a checkpoint frame. A caller appending into
// a fixed buffer checks it has that much room first.
func MaxAppendSize(n int) int {
	return HeaderSize + max(messageFixed, chainedFixed) + n + HeaderSize + checkpointSize
}

// appendMessageHead appends seq, type, time and digest, the fixed start
// of MESSAGE and CHAINED bodies.
func appendMessageHead(b []byte, seq uint64, typ message.Type, ts int64, d *Digest) []byte {
	b = appendU64(b, seq)
	b = append(b, byte(typ))
	b = appendU64(b, uint64(ts))
	return append(b, d[:]...)
}

// Checkpoint appends a CHECKPOINT frame covering every message appended so
// far, if some are uncovered; otherwise (and in the PerMessage mode) it
// returns dst unchanged. Call it when the feed goes idle with messages
// uncovered, and before closing the stream.
func (e *Encoder) Checkpoint(dst []byte) []byte {
	if e.mode != Chained || e.Uncovered() == 0 {
		return dst
	}
	return e.appendCheckpoint(dst, e.now().UnixNano())
}

func (e *Encoder) appendCheckpoint(dst []byte, ts int64) []byte {
	e.scratch = appendCanonicalCheckpoint(e.scratch[:0], &e.stream, e.seq, ts, &e.head)
	d := sum(e.scratch)
	sig := ed25519.Sign(e.priv, d[:])
	dst = appendHeader(dst, KindCheckpoint, checkpointSize)
	dst = appendU64(dst, e.seq)
	dst = appendU64(dst, uint64(ts))
	dst = append(dst, e.head[:]...)
	dst = append(dst, sig...)
	e.coveredTo = e.seq
	e.lastCheck = ts
	return dst
}

// Anchor appends the ANCHOR frame that must start a new connection's
// stream, and returns it with the connection's new random session. The
// anchor is signed now and states the stream, the mode, the sequence
// number of the last message appended and, in the Chained mode, the chain
// digest after it: the client then verifies every frame appended after
// this call, so the caller must start the connection at exactly the
// current end of its log (call Anchor under the log's lock).
func (e *Encoder) Anchor(dst []byte) ([]byte, Session, error) {
	var s Session
	if _, err := io.ReadFull(e.rand, s[:]); err != nil {
		return dst, s, fmt.Errorf("signed: draw a session: %w", err)
	}
	return e.appendAnchor(dst, s, e.now().UnixNano()), s, nil
}

func (e *Encoder) appendAnchor(dst []byte, s Session, ts int64) []byte {
	e.scratch = appendCanonicalAnchor(e.scratch[:0], &e.stream, &s, e.mode, e.seq, ts, &e.head)
	d := sum(e.scratch)
	sig := ed25519.Sign(e.priv, d[:])
	dst = appendHeader(dst, KindAnchor, anchorSize)
	dst = append(dst, e.stream[:]...)
	dst = append(dst, s[:]...)
	dst = append(dst, byte(e.mode))
	dst = appendU64(dst, e.seq)
	dst = appendU64(dst, uint64(ts))
	dst = append(dst, e.head[:]...)
	return append(dst, sig...)
}

// Response is the daemon's answer to one client's Request.
type Response struct {
	Session Session // the requesting connection's, from Anchor
	Request Digest  // the request's digest, Upstream.Digest
	Type    message.Type
	Time    time.Time
	Payload []byte
}

// AppendResponse appends a signed RESPONSE frame for one connection. It
// reads only what never changes after NewEncoder, so unlike the other
// methods it may be called from any goroutine at any time.
func (e *Encoder) AppendResponse(dst []byte, r *Response) ([]byte, error) {
	if !r.Type.Valid() {
		return dst, fmt.Errorf("%w: type %d", ErrInvalidMessage, uint8(r.Type))
	}
	if len(r.Payload) > MaxPayload {
		return dst, fmt.Errorf("%w: payload of %d bytes, more than %d", ErrInvalidMessage, len(r.Payload), MaxPayload)
	}
	t := r.Time.UnixNano()
	d := sum(appendCanonicalResponse(nil, &e.stream, &r.Session, &r.Request, r.Type, t, r.Payload))
	sig := ed25519.Sign(e.priv, d[:])
	dst = appendHeader(dst, KindResponse, responseFixed+len(r.Payload))
	dst = append(dst, r.Request[:]...)
	dst = append(dst, byte(r.Type))
	dst = appendU64(dst, uint64(t))
	dst = append(dst, d[:]...)
	dst = append(dst, sig...)
	return append(dst, r.Payload...), nil
}

// AppendPong appends a PONG frame answering a PING's nonce.
func AppendPong(dst []byte, nonce uint64) []byte {
	return appendU64(appendHeader(dst, KindPong, nonceSize), nonce)
}
