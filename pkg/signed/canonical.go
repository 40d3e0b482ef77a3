package signed

import (
	"encoding/binary"
	"encoding/hex"

	"github.com/chatty-dev/chatty/pkg/message"
	"golang.org/x/crypto/blake2b"
)

// StreamID names one Encoder's stream: random, fixed for its life. Every
// message's digest covers it, so frames of one stream (or of an earlier run
// of the daemon) cannot be passed off as frames of another.
type StreamID [16]byte

// Session names one connection: random, chosen for each ANCHOR. Responses
// and client messages cover it, so they cannot be replayed on another
// connection.
type Session [16]byte

// Digest is a BLAKE2b-256 digest.
type Digest [32]byte

func (s StreamID) String() string { return hex.EncodeToString(s[:]) }
func (s Session) String() string  { return hex.EncodeToString(s[:]) }
func (d Digest) String() string   { return hex.EncodeToString(d[:]) }

// The domain-separation labels that begin every canonical encoding, so that
// no two kinds of signed data can share bytes.
const (
	labelMessage    = "chatty-signed-v1 message"
	labelChain      = "chatty-signed-v1 chain"
	labelCheckpoint = "chatty-signed-v1 checkpoint"
	labelAnchor     = "chatty-signed-v1 anchor"
	labelResponse   = "chatty-signed-v1 response"
	labelClient     = "chatty-signed-v1 client-message"
)

// appendLabel appends a label with its one-byte length.
func appendLabel(b []byte, s string) []byte {
	return append(append(b, byte(len(s))), s...)
}

func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// appendPayload appends a payload with its four-byte length.
func appendPayload(b, p []byte) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(p))), p...)
}

// appendCanonicalMessage appends the canonical encoding of a feed message:
//
//	label("chatty-signed-v1 message") stream[16] seq:u64 type:u8 time:i64 len:u32 payload
//
// A per-message digest is BLAKE2b-256 of it.
func appendCanonicalMessage(b []byte, stream *StreamID, seq uint64, typ message.Type, ts int64, payload []byte) []byte {
	b = appendLabel(b, labelMessage)
	b = append(b, stream[:]...)
	b = appendU64(b, seq)
	b = append(b, byte(typ))
	b = appendU64(b, uint64(ts))
	return appendPayload(b, payload)
}

// appendChainPrefix appends what precedes a chained message's canonical
// encoding in its digest input: label("chatty-signed-v1 chain") prev[32].
func appendChainPrefix(b []byte, prev *Digest) []byte {
	return append(appendLabel(b, labelChain), prev[:]...)
}

// appendCanonicalCheckpoint appends
//
//	label("chatty-signed-v1 checkpoint") stream[16] seq:u64 time:i64 head[32]
func appendCanonicalCheckpoint(b []byte, stream *StreamID, seq uint64, ts int64, head *Digest) []byte {
	b = appendLabel(b, labelCheckpoint)
	b = append(b, stream[:]...)
	b = appendU64(b, seq)
	b = appendU64(b, uint64(ts))
	return append(b, head[:]...)
}

// appendCanonicalAnchor appends
//
//	label("chatty-signed-v1 anchor") stream[16] session[16] mode:u8 seq:u64 time:i64 head[32]
func appendCanonicalAnchor(b []byte, stream *StreamID, session *Session, mode Mode, seq uint64, ts int64, head *Digest) []byte {
	b = appendLabel(b, labelAnchor)
	b = append(b, stream[:]...)
	b = append(b, session[:]...)
	b = append(b, byte(mode))
	b = appendU64(b, seq)
	b = appendU64(b, uint64(ts))
	return append(b, head[:]...)
}

// appendCanonicalResponse appends
//
//	label("chatty-signed-v1 response") stream[16] session[16] request[32] type:u8 time:i64 len:u32 payload
func appendCanonicalResponse(b []byte, stream *StreamID, session *Session, request *Digest, typ message.Type, ts int64, payload []byte) []byte {
	b = appendLabel(b, labelResponse)
	b = append(b, stream[:]...)
	b = append(b, session[:]...)
	b = append(b, request[:]...)
	b = append(b, byte(typ))
	b = appendU64(b, uint64(ts))
	return appendPayload(b, payload)
}

// appendCanonicalClient appends
//
//	label("chatty-signed-v1 client-message") stream[16] session[16] key[32] seq:u64 type:u8 time:i64 len:u32 payload
func appendCanonicalClient(b []byte, stream *StreamID, session *Session, key []byte, seq uint64, typ message.Type, ts int64, payload []byte) []byte {
	b = appendLabel(b, labelClient)
	b = append(b, stream[:]...)
	b = append(b, session[:]...)
	b = append(b, key...)
	b = appendU64(b, seq)
	b = append(b, byte(typ))
	b = appendU64(b, uint64(ts))
	return appendPayload(b, payload)
}

// sum returns BLAKE2b-256 of b.
func sum(b []byte) Digest { return blake2b.Sum256(b) }
