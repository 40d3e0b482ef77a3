package signed

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

// DefaultUpstreamMaxPayload bounds the payload of a client's message by
// default: the longest text of a typed message.
const DefaultUpstreamMaxPayload = message.MaxTextBytes

// UpstreamMaxBody returns the body limit for a Decoder of a client's
// stream whose payloads are at most maxPayload bytes.
func UpstreamMaxBody(maxPayload int) int { return clientFixed + maxPayload }

// ClientSigner signs a client's messages to the daemon for one connection.
// Not safe for concurrent use.
type ClientSigner struct {
	priv    ed25519.PrivateKey
	pub     ed25519.PublicKey
	stream  StreamID
	session Session
	seq     uint64
	scratch []byte
}

// NewClientSigner returns a signer with the client's key for the
// connection that a, the verified ANCHOR (Verifier.Anchor), started.
func NewClientSigner(priv ed25519.PrivateKey, a AnchorInfo) (*ClientSigner, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signed: private key of %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	return &ClientSigner{
		priv:    priv,
		pub:     priv.Public().(ed25519.PublicKey),
		stream:  a.Stream,
		session: a.Session,
	}, nil
}

// Append appends a signed CLIENT_MESSAGE frame with the next sequence
// number (from 1) and returns it with the message's digest, which the
// daemon's RESPONSE to a Request names. On error dst is returned unchanged.
func (c *ClientSigner) Append(dst []byte, typ message.Type, ts time.Time, payload []byte) ([]byte, Digest, error) {
	if !typ.Valid() {
		return dst, Digest{}, fmt.Errorf("%w: type %d", ErrInvalidMessage, uint8(typ))
	}
	if len(payload) > MaxPayload {
		return dst, Digest{}, fmt.Errorf("%w: payload of %d bytes, more than %d", ErrInvalidMessage, len(payload), MaxPayload)
	}
	c.seq++
	t := ts.UnixNano()
	c.scratch = appendCanonicalClient(c.scratch[:0], &c.stream, &c.session, c.pub, c.seq, typ, t, payload)
	d := sum(c.scratch)
	sig := ed25519.Sign(c.priv, d[:])
	dst = appendHeader(dst, KindClientMessage, clientFixed+len(payload))
	dst = append(dst, c.pub...)
	dst = appendMessageHead(dst, c.seq, typ, t, &d)
	dst = append(dst, sig...)
	return append(dst, payload...), d, nil
}

// AppendAck appends an ACK frame for the feed message seq.
func AppendAck(dst []byte, seq uint64) []byte {
	return appendU64(appendHeader(dst, KindAck, nonceSize), seq)
}

// AppendPing appends a PING frame; the daemon answers with a PONG of the
// same nonce.
func AppendPing(dst []byte, nonce uint64) []byte {
	return appendU64(appendHeader(dst, KindPing, nonceSize), nonce)
}

// KeySet is the set of client keys the daemon accepts;
// *identity.AuthorizedKeys is one.
type KeySet interface {
	Contains(pub ed25519.PublicKey) bool
}

// UpstreamOptions are an UpstreamVerifier's settings. The zero value is fine.
type UpstreamOptions struct {
	// TimestampWindow is as in VerifierOptions.
	TimestampWindow time.Duration
	// MaxPayload bounds a client message's payload; 0 means
	// DefaultUpstreamMaxPayload.
	MaxPayload int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Upstream is one frame a client sent, checked.
type Upstream struct {
	Kind Kind // KindClientMessage, KindAck or KindPing
	// Seq is the client's sequence number (KindClientMessage), the feed
	// message acknowledged (KindAck) or the nonce (KindPing).
	Seq uint64
	// The rest is set for KindClientMessage only.
	Key     ed25519.PublicKey // the sender's key; aliases the frame
	Type    message.Type
	Time    time.Time
	Payload []byte // aliases the frame
	Digest  Digest // what a Response to it names as Request
}

// UpstreamVerifier checks the frames one client connection sends to the
// daemon. A rejected frame does not change its state, so the caller may
// count it and go on, or close the connection. Not safe for concurrent use.
type UpstreamVerifier struct {
	keys       KeySet
	stream     StreamID
	session    Session
	window     int64
	maxPayload int
	now        func() time.Time
	last       map[[ed25519.PublicKeySize]byte]uint64 // last sequence number per key
	scratch    []byte
	reject     [numReasons]uint64
	accepted   uint64
}

// NewUpstreamVerifier returns a verifier of client messages signed by a
// key of keys, for the connection that the daemon's Encoder anchored with
// stream and session.
func NewUpstreamVerifier(keys KeySet, stream StreamID, session Session, opts UpstreamOptions) *UpstreamVerifier {
	u := &UpstreamVerifier{
		keys:       keys,
		stream:     stream,
		session:    session,
		window:     int64(opts.TimestampWindow),
		maxPayload: opts.MaxPayload,
		now:        opts.Now,
		last:       make(map[[ed25519.PublicKeySize]byte]uint64),
	}
	if u.window == 0 {
		u.window = int64(DefaultTimestampWindow)
	}
	if u.maxPayload <= 0 {
		u.maxPayload = DefaultUpstreamMaxPayload
	}
	if u.now == nil {
		u.now = time.Now
	}
	return u
}

// MaxBody returns the body limit to give the connection's Decoder.
func (u *UpstreamVerifier) MaxBody() int { return UpstreamMaxBody(u.maxPayload) }

// Rejected returns the number of frames rejected for reason r.
func (u *UpstreamVerifier) Rejected(r Reason) uint64 {
	if r >= numReasons {
		return 0
	}
	return u.reject[r]
}

// Accepted returns the number of client messages accepted.
func (u *UpstreamVerifier) Accepted() uint64 { return u.accepted }

// Verify checks one frame from the client: a CLIENT_MESSAGE must come
// from an authorized key, carry the right digest and signature, have a
// sequence number above the last one of its key on this connection, a
// time within the window and a payload within the limit. Its error is a
// *RejectError.
func (u *UpstreamVerifier) Verify(f Frame) (Upstream, error) {
	up, re := u.verify(f)
	if re != nil {
		re.Offset = f.Offset
		if re.Kind == 0 {
			re.Kind = f.Kind
		}
		u.reject[re.Reason]++
		return Upstream{}, re
	}
	return up, nil
}

func (u *UpstreamVerifier) verify(f Frame) (Upstream, *RejectError) {
	b := f.Body
	switch f.Kind {
	case KindAck, KindPing:
		if len(b) != nonceSize {
			return Upstream{}, reject(ReasonMalformed, 0, "body of %d bytes, want %d", len(b), nonceSize)
		}
		return Upstream{Kind: f.Kind, Seq: binary.BigEndian.Uint64(b)}, nil
	case KindClientMessage:
	default:
		return Upstream{}, reject(ReasonUnexpected, 0, "not a client's frame")
	}
	if len(b) < clientFixed {
		return Upstream{}, reject(ReasonMalformed, 0, "body of %d bytes, shorter than %d", len(b), clientFixed)
	}
	key := ed25519.PublicKey(b[0:32])
	seq, typ, ts, digest := messageHead(b[32:])
	sig, payload := b[81:145], b[145:]
	if len(payload) > u.maxPayload {
		return Upstream{}, reject(ReasonOversized, seq, "payload of %d bytes, more than %d", len(payload), u.maxPayload)
	}
	if u.keys == nil || !u.keys.Contains(key) {
		return Upstream{}, reject(ReasonUnauthorized, seq, "key %x is not in the authorized keys", []byte(key))
	}
	u.scratch = appendCanonicalClient(u.scratch[:0], &u.stream, &u.session, key, seq, typ, ts, payload)
	d := sum(u.scratch)
	if string(d[:]) != string(digest) {
		return Upstream{}, reject(ReasonBadDigest, seq, "carried %x, computed %s", digest, d)
	}
	if !ed25519.Verify(key, d[:], sig) {
		return Upstream{}, reject(ReasonBadSignature, seq, "does not verify with the sender's key")
	}
	if !typ.Valid() {
		return Upstream{}, reject(ReasonMalformed, seq, "unknown message type %d", uint8(typ))
	}
	k := [ed25519.PublicKeySize]byte(key)
	if last := u.last[k]; seq <= last {
		return Upstream{}, reject(ReasonReplay, seq, "after seq %d of this key", last)
	}
	if re := checkWindow(ts, u.now().UnixNano(), u.window, seq); re != nil {
		return Upstream{}, re
	}
	u.last[k] = seq
	u.accepted++
	return Upstream{Kind: KindClientMessage, Seq: seq, Key: key, Type: typ, Time: time.Unix(0, ts), Payload: payload, Digest: d}, nil
}
