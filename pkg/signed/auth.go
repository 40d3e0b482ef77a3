package signed

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"
)

// Client authentication, CHALLENGE then AUTH: docs/protocol.md, "Client
// authentication".

// Binding ties an AUTH to one TLS connection: the 32 bytes of keying
// material both ends export under BindingLabel (RFC 9266's tls-exporter),
// or 32 zero bytes on a connection without TLS. A man in the middle who
// terminates TLS on both sides has two different bindings, so an AUTH it
// relays does not verify.
type Binding [32]byte

// BindingLabel is the TLS exporter label of a connection's Binding.
const BindingLabel = "EXPORTER-chatty-signed-v1-auth"

// Sizes of the authentication frames' bodies.
const (
	challengeSize = 16 + 16 + 8 + 64 // stream, session, time, sig
	authSize      = 32 + 8 + 64      // key, time, sig
)

// Domain labels of the authentication encodings.
const (
	labelChallenge = "chatty-signed-v1 challenge"
	labelAuth      = "chatty-signed-v1 auth"
)

// appendCanonicalChallenge appends
//
//	label("chatty-signed-v1 challenge") stream[16] session[16] time:i64
func appendCanonicalChallenge(b []byte, stream *StreamID, session *Session, ts int64) []byte {
	b = appendLabel(b, labelChallenge)
	b = append(b, stream[:]...)
	b = append(b, session[:]...)
	return appendU64(b, uint64(ts))
}

// appendCanonicalAuth appends
//
//	label("chatty-signed-v1 auth") stream[16] session[16] binding[32] key[32] time:i64
func appendCanonicalAuth(b []byte, stream *StreamID, session *Session, binding *Binding, key []byte, ts int64) []byte {
	b = appendLabel(b, labelAuth)
	b = append(b, stream[:]...)
	b = append(b, session[:]...)
	b = append(b, binding[:]...)
	b = append(b, key...)
	return appendU64(b, uint64(ts))
}

// Challenge is what a verified CHALLENGE said.
type Challenge struct {
	Stream  StreamID
	Session Session
	Time    time.Time
}

// AppendChallenge appends a CHALLENGE frame for the connection of session,
// signed with the Encoder's key. Like AppendResponse it reads only what
// never changes, so any goroutine may call it at any time.
func (e *Encoder) AppendChallenge(dst []byte, session Session) []byte {
	ts := e.now().UnixNano()
	d := sum(appendCanonicalChallenge(nil, &e.stream, &session, ts))
	sig := ed25519.Sign(e.priv, d[:])
	dst = appendHeader(dst, KindChallenge, challengeSize)
	dst = append(dst, e.stream[:]...)
	dst = append(dst, session[:]...)
	dst = appendU64(dst, uint64(ts))
	return append(dst, sig...)
}

// AppendAuth appends the AUTH frame that answers ch with the client's key
// priv, on the connection whose channel binding is binding.
func AppendAuth(dst []byte, priv ed25519.PrivateKey, ch Challenge, binding Binding, now time.Time) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return dst, fmt.Errorf("signed: private key of %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	pub := priv.Public().(ed25519.PublicKey)
	ts := now.UnixNano()
	d := sum(appendCanonicalAuth(nil, &ch.Stream, &ch.Session, &binding, pub, ts))
	sig := ed25519.Sign(priv, d[:])
	dst = appendHeader(dst, KindAuth, authSize)
	dst = append(dst, pub...)
	dst = appendU64(dst, uint64(ts))
	return append(dst, sig...), nil
}

// challengeFrame checks a CHALLENGE: only before the ANCHOR, at most one,
// signed by the daemon, in time. The ANCHOR that follows must name the
// same session.
func (v *Verifier) challengeFrame(b []byte, now int64, deliver func(*Message)) *RejectError {
	if v.anchored || v.challenged {
		return reject(ReasonUnexpected, 0, "a CHALLENGE after the stream started")
	}
	if len(b) != challengeSize {
		return reject(ReasonMalformed, 0, "body of %d bytes, want %d", len(b), challengeSize)
	}
	var ch Challenge
	copy(ch.Stream[:], b[0:16])
	copy(ch.Session[:], b[16:32])
	ts := int64(binary.BigEndian.Uint64(b[32:40]))
	d := sum(appendCanonicalChallenge(v.scratch[:0], &ch.Stream, &ch.Session, ts))
	if !ed25519.Verify(v.pub, d[:], b[40:104]) {
		return reject(ReasonBadSignature, 0, "challenge signature does not verify with the daemon's key")
	}
	if re := v.checkTime(ts, now, 0); re != nil {
		return re
	}
	ch.Time = time.Unix(0, ts)
	v.challenge, v.challenged = ch, true
	v.msg = Message{Kind: KindChallenge, Time: ch.Time}
	deliver(&v.msg)
	return nil
}

// Challenge returns the verified CHALLENGE that started the stream, if
// the daemon sent one: the client answers it with AppendAuth.
func (v *Verifier) Challenge() (Challenge, bool) { return v.challenge, v.challenged }

// VerifyAuth checks a connection's first frame on a listener that requires
// authentication: an AUTH from a key of keys, signed over this
// connection's stream, session and binding, with a time within the
// window. It returns the client's key, which aliases the frame. Its error
// is a *RejectError.
func (u *UpstreamVerifier) VerifyAuth(f Frame, keys KeySet, binding Binding) (ed25519.PublicKey, error) {
	key, re := u.verifyAuth(f, keys, &binding)
	if re != nil {
		re.Offset = f.Offset
		if re.Kind == 0 {
			re.Kind = f.Kind
		}
		u.reject[re.Reason]++
		return nil, re
	}
	return key, nil
}

func (u *UpstreamVerifier) verifyAuth(f Frame, keys KeySet, binding *Binding) (ed25519.PublicKey, *RejectError) {
	if f.Kind != KindAuth {
		return nil, reject(ReasonUnauthorized, 0, "%v before AUTH on a listener that requires authentication", f.Kind)
	}
	b := f.Body
	if len(b) != authSize {
		return nil, reject(ReasonMalformed, 0, "body of %d bytes, want %d", len(b), authSize)
	}
	key := ed25519.PublicKey(b[0:32])
	ts := int64(binary.BigEndian.Uint64(b[32:40]))
	if keys == nil || !keys.Contains(key) {
		return nil, reject(ReasonUnauthorized, 0, "key %s is not authorized", keyHex(key))
	}
	d := sum(appendCanonicalAuth(u.scratch[:0], &u.stream, &u.session, binding, key, ts))
	if !ed25519.Verify(key, d[:], b[40:104]) {
		return nil, reject(ReasonBadSignature, 0, "AUTH does not verify with the key it names")
	}
	if re := checkWindow(ts, u.now().UnixNano(), u.window, 0); re != nil {
		return nil, re
	}
	return key, nil
}

func keyHex(k []byte) string { return fmt.Sprintf("%x", k) }
