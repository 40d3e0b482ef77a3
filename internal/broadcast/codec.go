package broadcast

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/sirupsen/logrus"
)

// codec is what differs between the text protocol and the signed one on
// the way out: how published lines become the log's bytes, what the log
// appends on its own (checkpoints) and what a client receives privately
// first (an anchor). Its Locked methods are called with the log's mu held,
// which also guards the codec's state.
type codec interface {
	// maxSize returns the most bytes encodeLocked adds for a line of n bytes.
	maxSize(n int) int
	// encodeLocked appends line's encoding to dst, which has maxSize room,
	// and reports whether the line was encoded (it takes a sequence number).
	// seq is the line's sequence number.
	encodeLocked(dst, line []byte, seq uint64) ([]byte, bool)
	// encodeMessageLocked is encodeLocked for a typed message; dst grows
	// as needed.
	encodeMessageLocked(dst []byte, m *message.Message, seq uint64) ([]byte, bool)
	// appendedLocked runs after every append.
	appendedLocked(l *log)
	// closingLocked runs once, before the log is closed.
	closingLocked(l *log)
	// joinLocked returns what a client starting at the log's end needs.
	joinLocked() (joined, error)
	// resumeLocked returns what a client starting at cur needs, cur
	// being where seekLocked put it, and told of the gap when set.
	resumeLocked(l *log, cur cursor, gap gapRange, other string) (joined, error)
	// skip returns the offset in buf, encoded lines from a chunk's start,
	// after its first n lines.
	skip(buf []byte, n uint64) int
	// gapLocked runs when the log's sequence numbers jump (appendAt):
	// lines from through to were never appended.
	gapLocked(l *log, from, to uint64)
	// chunkLocked runs when the log starts chunk next after prev, whose
	// bytes are final: the codec keeps in next what it needs to find its
	// state at any line of it (the signed codec's chain digest).
	chunkLocked(prev, next *chunk)
}

// gapRange is lines a resuming client asked for that the log does not
// hold; empty when To < From.
type gapRange struct{ From, To uint64 }

func (g gapRange) empty() bool { return g.To < g.From }

// skipLines returns the offset in buf after its first n lines, each
// ended by "\n", passing over the lines for which raw reports true: those
// take no sequence number.
func skipLines(buf []byte, n uint64, raw func(line []byte) bool) int {
	off := 0
	for n > 0 {
		i := bytes.IndexByte(buf[off:], '\n')
		if i < 0 {
			return len(buf)
		}
		if raw == nil || !raw(buf[off:off+i]) {
			n--
		}
		off += i + 1
	}
	return off
}

// joined is what a client gets from the codec when it starts.
type joined struct {
	// preamble is written to the client before anything of the log.
	preamble []byte
	// session is the signed connection's session, from its anchor.
	session signed.Session
}

// textCodec is the original protocol: every line followed by "\n".
type textCodec struct{}

func (textCodec) maxSize(n int) int { return n + 1 }

func (textCodec) encodeLocked(dst, line []byte, _ uint64) ([]byte, bool) {
	return append(append(dst, line...), '\n'), true
}

// encodeMessageLocked sends a typed message as its text line.
func (textCodec) encodeMessageLocked(dst []byte, m *message.Message, _ uint64) ([]byte, bool) {
	return append(m.AppendText(dst), '\n'), true
}

func (textCodec) appendedLocked(*log)            {}
func (textCodec) closingLocked(*log)             {}
func (textCodec) joinLocked() (joined, error)    { return joined{}, nil }
func (textCodec) gapLocked(*log, uint64, uint64) {}
func (textCodec) chunkLocked(_, _ *chunk)        {}

func (textCodec) skip(buf []byte, n uint64) int { return skipLines(buf, n, nil) }

// resumeLocked: the original protocol has nothing to say; a pool slot's
// worker is just sent the lines from where its slot stopped.
func (textCodec) resumeLocked(*log, cursor, gapRange, string) (joined, error) {
	return joined{}, nil
}

// SignedOptions configure a server of the signed protocol (docs/protocol.md).
type SignedOptions struct {
	// Key signs every frame.
	Key ed25519.PrivateKey
	// Mode is signed.Chained or signed.PerMessage.
	Mode signed.Mode
	// CheckpointEvery and CheckpointInterval space the checkpoints of the
	// Chained mode; zero means the defaults of package signed. A
	// checkpoint is also appended when the feed goes quiet with messages
	// uncovered, CheckpointInterval after the first of them.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// TimestampWindow bounds the time of clients' signed messages; zero
	// means signed.DefaultTimestampWindow.
	TimestampWindow time.Duration
	// Keys are the client keys whose messages are accepted, and with
	// Authenticate the keys that may connect; nil accepts none (a client
	// message is then a rejected frame). It is asked at every use, so a
	// KeySet whose keys change (on reload) applies at once.
	Keys signed.KeySet
	// FeedType is the type of every feed line; zero means message.Info.
	FeedType message.Type
	// Authenticate requires each client to answer a CHALLENGE with an
	// AUTH by a key of Keys before it is sent anything.
	Authenticate bool
	// UpstreamRate and UpstreamBurst limit each client's signed messages
	// (a token bucket); zero means no limit.
	UpstreamRate  float64
	UpstreamBurst int
}

// signedCodec frames every line as a signed Info message, and a typed
// message as a signed message of its type.
type signedCodec struct {
	enc      *signed.Encoder
	feedType message.Type
	interval time.Duration
	log      *logrus.Entry

	// Guarded by the log's mu:
	timer *time.Timer // the pending checkpoint timer, nil when none is armed
}

func newSignedCodec(o SignedOptions, logger *logrus.Entry) (*signedCodec, error) {
	enc, err := signed.NewEncoder(o.Key, o.Mode, signed.EncoderOptions{
		CheckpointEvery:    o.CheckpointEvery,
		CheckpointInterval: o.CheckpointInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("signed listener: %w", err)
	}
	interval := o.CheckpointInterval
	if interval <= 0 {
		interval = signed.DefaultCheckpointInterval
	}
	feedType := o.FeedType
	if feedType == 0 {
		feedType = message.Info
	}
	if !feedType.Valid() {
		return nil, fmt.Errorf("signed listener: invalid feed message type %d", uint8(feedType))
	}
	return &signedCodec{enc: enc, feedType: feedType, interval: interval, log: logger}, nil
}

func (*signedCodec) maxSize(n int) int { return signed.MaxAppendSize(n) }

func (sc *signedCodec) encodeLocked(dst, line []byte, _ uint64) ([]byte, bool) {
	out, _, err := sc.enc.Append(dst, sc.feedType, time.Now(), line)
	if err != nil {
		// Only a payload over signed.MaxPayload; the configuration keeps
		// feed lines below it.
		sc.log.WithError(err).Error("Line not signed; the signed listener's clients do not get it")
		return dst, false
	}
	return out, true
}

// encodeMessageLocked signs m with its type and time; its text is the
// payload.
func (sc *signedCodec) encodeMessageLocked(dst []byte, m *message.Message, _ uint64) ([]byte, bool) {
	out, _, err := sc.enc.Append(dst, m.Type, m.Time, []byte(m.Text))
	if err != nil {
		// Only an invalid message: senders validate theirs.
		sc.log.WithError(err).WithField("type", m.Type.String()).
			Error("Message not signed; the signed listener's clients do not get it")
		return dst, false
	}
	return out, true
}

// appendedLocked arms the checkpoint timer when messages are left
// uncovered, so that a quiet feed does not hold them back in the clients.
func (sc *signedCodec) appendedLocked(l *log) {
	if sc.timer != nil || sc.enc.Uncovered() == 0 {
		return
	}
	sc.timer = time.AfterFunc(sc.interval, func() {
		l.mu.Lock()
		defer l.wakeWriters(l.endPos.Load())
		defer l.mu.Unlock()
		sc.timer = nil
		if l.closed.Load() {
			return
		}
		sc.checkpointLocked(l)
	})
}

func (sc *signedCodec) checkpointLocked(l *log) {
	l.appendRawLocked(signed.MaxAppendSize(0), sc.enc.Checkpoint)
}

// closingLocked covers the last messages, so that clients deliver them
// before the stream ends.
func (sc *signedCodec) closingLocked(l *log) {
	if sc.timer != nil {
		sc.timer.Stop()
		sc.timer = nil
	}
	sc.checkpointLocked(l)
}

// skip passes over n message frames; checkpoints take no sequence
// number.
func (*signedCodec) skip(buf []byte, n uint64) int {
	off := 0
	for n > 0 && off+signed.HeaderSize <= len(buf) {
		kind := signed.Kind(buf[off+1])
		off += signed.HeaderSize + int(binary.BigEndian.Uint32(buf[off+2:]))
		if kind == signed.KindMessage || kind == signed.KindChained {
			n--
		}
	}
	return min(off, len(buf))
}

// gapLocked keeps the messages' numbers the log's: it covers the
// messages before the jump, then makes the encoder go on at its end.
func (sc *signedCodec) gapLocked(l *log, _, to uint64) {
	sc.checkpointLocked(l)
	sc.skipTo(to + 1)
}

// skipTo makes next the number of the next message signed.
func (sc *signedCodec) skipTo(next uint64) {
	if err := sc.enc.SkipTo(next); err != nil {
		// Only a number behind the encoder's, which the log refuses first.
		sc.log.WithError(err).Error("The signed listener's numbers no longer follow the stream's; its clients cannot resume")
	}
}

// chunkLocked keeps the chain digest at the chunk's start: with it, the
// digest after any of its lines is found by reading the chunk's frames
// up to that line (signedresume.go). It is read from prev's frames, not
// the encoder, which may have encoded next's first message already
// (appendMessage encodes before it finds room).
func (*signedCodec) chunkLocked(prev, next *chunk) {
	n, _ := prev.published()
	next.head = signed.ChainHeadAt(prev.buf[:n], prev.head)
}

// resumeLocked: a signed client resumes by a RESUME frame of its own
// (signedresume.go), never by a Placement or a START; this is refused
// with a reason rather than sent frames no anchor covers.
func (*signedCodec) resumeLocked(*log, cursor, gapRange, string) (joined, error) {
	return joined{}, errors.New("the signed listener resumes only by a client's RESUME frame")
}

func (sc *signedCodec) joinLocked() (joined, error) {
	a, s, err := sc.enc.Anchor(nil)
	if err != nil {
		return joined{}, err
	}
	return joined{preamble: a, session: s}, nil
}
