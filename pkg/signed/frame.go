// Package signed implements chatty's signed protocol: typed feed messages in
// binary frames, each covered by a BLAKE2b-256 digest and an Ed25519
// signature of the daemon, verified by every client; and signed client
// messages going the other way. docs/protocol.md is the byte-exact
// reference, with test vectors that vectors_test.go checks.
//
// The daemon side is an Encoder: it encodes and signs each message once,
// into bytes that are then written to every client, and makes the ANCHOR
// frame that starts each connection. Messages are signed one by one
// (PerMessage mode) or chained by their digests and covered by a signed
// CHECKPOINT every so many messages or milliseconds (Chained mode), which
// shares one signature among many messages.
//
// The client side is a Verifier, fed the byte stream in pieces of any size.
// It hands over only messages whose signature (or covering checkpoint) has
// verified, and stops at the first frame it rejects, saying why; a client
// should then drop the connection. A ClientSigner signs a client's own
// messages with its key, and the daemon checks them with an
// UpstreamVerifier against its authorized keys.
//
// Nothing here does cryptography of its own: digests are
// golang.org/x/crypto/blake2b, signatures crypto/ed25519.
package signed

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Magic is the first byte of every frame: it names the protocol and its
// version (chatty signed protocol, version 1). It is not ASCII, so a text
// client on a signed port, or a signed client on a text port, fails at once.
const Magic byte = 0xC1

// HeaderSize is the size of a frame header: Magic, the kind, and the body
// length as a big-endian uint32.
const HeaderSize = 6

// MaxPayload is the largest payload of any frame.
const MaxPayload = 1 << 20

// MaxBody is the largest frame body a Decoder accepts by default: a
// payload of MaxPayload and the largest fixed part with room to spare.
const MaxBody = MaxPayload + 256

// Kind is a frame's kind, its second byte.
type Kind uint8

// The frame kinds. Kinds from 0x01 go from the daemon to clients, kinds
// from 0x11 from clients to the daemon.
const (
	KindAnchor        Kind = 0x01 // signed start of a connection's stream
	KindMessage       Kind = 0x02 // a message with its own signature (per-message mode)
	KindChained       Kind = 0x03 // a message chained to the previous one (chained mode)
	KindCheckpoint    Kind = 0x04 // a signature over the chain so far (chained mode)
	KindResponse      Kind = 0x05 // the daemon's signed answer to one client's request
	KindPong          Kind = 0x06 // answer to a PING
	KindChallenge     Kind = 0x07 // the daemon asks the client to authenticate
	KindResumed       Kind = 0x08 // signed start of a resumed connection's stream, answering its RESUME
	KindClientMessage Kind = 0x11 // a message signed by a client's key
	KindAck           Kind = 0x12 // a client has received a message
	KindPing          Kind = 0x13 // a client's keep-alive
	KindAuth          Kind = 0x14 // a client's answer to a CHALLENGE
	KindResume        Kind = 0x15 // a client asks to start at a sequence number
)

var kindNames = map[Kind]string{
	KindAnchor:        "ANCHOR",
	KindMessage:       "MESSAGE",
	KindChained:       "CHAINED",
	KindCheckpoint:    "CHECKPOINT",
	KindResponse:      "RESPONSE",
	KindPong:          "PONG",
	KindClientMessage: "CLIENT_MESSAGE",
	KindAck:           "ACK",
	KindPing:          "PING",
	KindChallenge:     "CHALLENGE",
	KindAuth:          "AUTH",
	KindResumed:       "RESUMED",
	KindResume:        "RESUME",
}

// String returns the kind's name, such as "CHECKPOINT".
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(0x%02x)", uint8(k))
}

// Known reports whether k is one of the frame kinds.
func (k Kind) Known() bool { _, ok := kindNames[k]; return ok }

// Sizes of the fixed parts of frame bodies (see docs/protocol.md).
const (
	anchorSize     = 16 + 16 + 1 + 8 + 8 + 32 + 64 // stream, session, mode, seq, time, head, sig
	messageFixed   = 8 + 1 + 8 + 32 + 64           // seq, type, time, digest, sig; payload follows
	chainedFixed   = 8 + 1 + 8 + 32                // seq, type, time, digest; payload follows
	checkpointSize = 8 + 8 + 32 + 64               // seq, time, head, sig
	responseFixed  = 32 + 1 + 8 + 32 + 64          // request, type, time, digest, sig; payload follows
	clientFixed    = 32 + 8 + 1 + 8 + 32 + 64      // key, seq, type, time, digest, sig; payload follows
	nonceSize      = 8                             // PING, PONG, ACK
)

// appendHeader appends a frame header for a body of n bytes.
func appendHeader(b []byte, k Kind, n int) []byte {
	return binary.BigEndian.AppendUint32(append(b, Magic, byte(k)), uint32(n))
}

// Frame is one decoded frame. Body aliases the Decoder's buffer and is
// valid until its next Feed.
type Frame struct {
	Kind   Kind
	Body   []byte
	Offset int64 // position of the frame's first byte in the stream
}

// A Decoder splits a byte stream into frames, whatever pieces the stream
// arrives in. It checks the header of a frame as soon as it has it, so an
// oversized or foreign frame is refused before its body is read; it keeps
// at most one incomplete frame. Its first error is final: a stream cannot
// be resynchronised. The zero Decoder is not usable; use NewDecoder.
//
// A Verifier's Decoder, which reads the daemon's stream, also recognises
// at its start the text line of a listener that refuses the connection
// (keeping at most 255 bytes of it until its newline) and reports it as
// the server's refusal; a daemon's Decoder of a client's stream does not.
type Decoder struct {
	maxBody int
	// fromDaemon is set on a client's Decoder of the daemon's stream
	// (newDaemonDecoder): only there can a refusal line come.
	fromDaemon bool
	buf        []byte
	off        int   // start of the unconsumed bytes in buf
	pos        int64 // stream offset of buf[off]
	err        error
}

// NewDecoder returns a Decoder that refuses bodies longer than maxBody;
// 0 means MaxBody.
func NewDecoder(maxBody int) *Decoder {
	if maxBody <= 0 {
		maxBody = MaxBody
	}
	return &Decoder{maxBody: maxBody}
}

// newDaemonDecoder returns a NewDecoder(maxBody) for a client reading the
// daemon's stream, which names a listener's refusal line at its start.
func newDaemonDecoder(maxBody int) *Decoder {
	d := NewDecoder(maxBody)
	d.fromDaemon = true
	return d
}

// Feed adds the next bytes of the stream. Frames returned before become
// invalid.
func (d *Decoder) Feed(p []byte) {
	if d.err != nil {
		return
	}
	if d.off > 0 {
		n := copy(d.buf, d.buf[d.off:])
		d.buf = d.buf[:n]
		d.off = 0
	}
	d.buf = append(d.buf, p...)
}

// Next returns the next whole frame, if there is one. It returns ok false
// when it needs more bytes, and a *RejectError for a malformed or oversized
// frame, then for every later call.
func (d *Decoder) Next() (f Frame, ok bool, err error) {
	if d.err != nil {
		return Frame{}, false, d.err
	}
	rest := d.buf[d.off:]
	if len(rest) >= 1 && rest[0] != Magic {
		if d.fromDaemon && d.pos == 0 {
			switch line, more := refusalLine(rest); {
			case more:
				return Frame{}, false, nil
			case line != nil:
				return d.fail(ReasonMalformed, 0, "the server refused the connection: %q", line)
			}
		}
		return d.fail(ReasonMalformed, 0, "first byte 0x%02x is not 0x%02x: not a chatty signed stream, or it lost its place", rest[0], Magic)
	}
	if len(rest) >= 2 && !Kind(rest[1]).Known() {
		return d.fail(ReasonMalformed, Kind(rest[1]), "unknown frame kind")
	}
	if len(rest) < HeaderSize {
		return Frame{}, false, nil
	}
	kind := Kind(rest[1])
	n := binary.BigEndian.Uint32(rest[2:HeaderSize])
	if uint64(n) > uint64(d.maxBody) {
		return d.fail(ReasonOversized, kind, "body of %d bytes, more than the limit of %d", n, d.maxBody)
	}
	end := HeaderSize + int(n)
	if len(rest) < end {
		return Frame{}, false, nil
	}
	f = Frame{Kind: kind, Body: rest[HeaderSize:end:end], Offset: d.pos}
	d.off += end
	d.pos += int64(end)
	return f, true, nil
}

// refusalLine recognises, at the start of a stream, the text line a chattyd
// listener sends to a connection it refuses ("ERROR too many clients
// ...", the same on every listener) and returns it without its newline
// once it has it whole; more means that b could still become one.
func refusalLine(b []byte) (line []byte, more bool) {
	const prefix, maxLine = "ERROR ", 256
	n := min(len(b), len(prefix))
	if string(b[:n]) != prefix[:n] {
		return nil, false
	}
	if n < len(prefix) {
		return nil, true
	}
	if i := bytes.IndexByte(b[:min(len(b), maxLine)], '\n'); i >= 0 {
		return b[:i], false
	}
	return nil, len(b) < maxLine
}

func (d *Decoder) fail(r Reason, k Kind, format string, args ...any) (Frame, bool, error) {
	d.err = &RejectError{Reason: r, Kind: k, Offset: d.pos, Detail: fmt.Sprintf(format, args...)}
	d.buf, d.off = nil, 0
	return Frame{}, false, d.err
}

// Buffered returns the number of bytes held that do not yet make a frame.
func (d *Decoder) Buffered() int { return len(d.buf) - d.off }

// Offset returns the stream offset of the next frame.
func (d *Decoder) Offset() int64 { return d.pos }
