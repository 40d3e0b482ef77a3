package signed

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"
)

// authSetup starts a connection that requires authentication: the
// daemon's CHALLENGE and ANCHOR for one session, a client Verifier that
// has read the CHALLENGE, and the daemon's UpstreamVerifier.
func authSetup(t *testing.T) (ch Challenge, anchor []byte, v *Verifier, u *UpstreamVerifier) {
	t.Helper()
	e := newTestEncoder(t, Chained, 0)
	anchor, session, err := e.Anchor(nil)
	if err != nil {
		t.Fatal(err)
	}
	v, _ = NewVerifier(e.PublicKey(), VerifierOptions{Now: fixedNow})
	var got []Kind
	if err := v.Feed(e.AppendChallenge(nil, session), func(m *Message) { got = append(got, m.Kind) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != KindChallenge {
		t.Fatalf("delivered %v for a CHALLENGE, want one KindChallenge", got)
	}
	ch, ok := v.Challenge()
	if !ok || ch.Session != session || ch.Stream != e.StreamID() {
		t.Fatalf("challenge %+v, ok %v; want session %v of stream %v", ch, ok, session, e.StreamID())
	}
	u = NewUpstreamVerifier(nil, e.StreamID(), session, UpstreamOptions{Now: fixedNow})
	return ch, anchor, v, u
}

func TestAuthRoundTrip(t *testing.T) {
	ch, anchor, v, u := authSetup(t)
	binding := Binding{1, 2, 3}
	b, err := AppendAuth(nil, clientPriv, ch, binding, testNow)
	if err != nil {
		t.Fatal(err)
	}
	key, err := u.VerifyAuth(decodeOne(t, b, u.MaxBody()), keySet{clientPriv.Public().(ed25519.PublicKey)}, binding)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Equal(clientPriv.Public()) {
		t.Errorf("authenticated key %x, want the client's", []byte(key))
	}
	// The ANCHOR of the same session then starts the stream.
	if err := v.Feed(anchor, func(*Message) {}); err != nil {
		t.Fatalf("anchor after the challenge: %v", err)
	}
	if _, ok := v.Anchor(); !ok {
		t.Fatal("no anchor")
	}
}

// Each way an AUTH can be wrong is refused with its reason.
func TestAuthRefused(t *testing.T) {
	clientPub := clientPriv.Public().(ed25519.PublicKey)
	stranger := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x55}, 32))
	binding := Binding{9}
	cases := []struct {
		name    string
		frame   func(ch Challenge) []byte
		keys    KeySet
		binding Binding
		want    error
	}{
		{"unknown key", func(ch Challenge) []byte { b, _ := AppendAuth(nil, stranger, ch, binding, testNow); return b },
			keySet{clientPub}, binding, ErrUnauthorized},
		{"no authorized keys", func(ch Challenge) []byte { b, _ := AppendAuth(nil, clientPriv, ch, binding, testNow); return b },
			nil, binding, ErrUnauthorized},
		{"another TLS channel", func(ch Challenge) []byte { b, _ := AppendAuth(nil, clientPriv, ch, Binding{8}, testNow); return b },
			keySet{clientPub}, binding, ErrBadSignature},
		{"another connection's session", func(ch Challenge) []byte {
			ch.Session[0] ^= 1
			b, _ := AppendAuth(nil, clientPriv, ch, binding, testNow)
			return b
		}, keySet{clientPub}, binding, ErrBadSignature},
		{"stale", func(ch Challenge) []byte {
			b, _ := AppendAuth(nil, clientPriv, ch, binding, testNow.Add(-time.Hour))
			return b
		}, keySet{clientPub}, binding, ErrTimestamp},
		{"flipped signature", func(ch Challenge) []byte {
			b, _ := AppendAuth(nil, clientPriv, ch, binding, testNow)
			b[len(b)-1] ^= 1
			return b
		}, keySet{clientPub}, binding, ErrBadSignature},
		{"a PING instead", func(Challenge) []byte { return AppendPing(nil, 1) }, keySet{clientPub}, binding, ErrUnauthorized},
		{"an ACK instead", func(Challenge) []byte { return AppendAck(nil, 1) }, keySet{clientPub}, binding, ErrUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch, _, _, u := authSetup(t)
			key, err := u.VerifyAuth(decodeOne(t, tc.frame(ch), u.MaxBody()), tc.keys, tc.binding)
			if !errors.Is(err, tc.want) || key != nil {
				t.Fatalf("VerifyAuth = %x, %v; want %v", []byte(key), err, tc.want)
			}
		})
	}
}

// A client refuses a CHALLENGE it cannot trust, a second one, one after
// the ANCHOR, and an ANCHOR of another session than the CHALLENGE's.
func TestChallengeChecks(t *testing.T) {
	e := newTestEncoder(t, PerMessage, 0)
	other, err := NewEncoder(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x77}, 32)), PerMessage, EncoderOptions{StreamID: e.StreamID(), Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	anchor, session, err := e.Anchor(nil)
	if err != nil {
		t.Fatal(err)
	}
	otherStream := e.StreamID()
	otherStream[0] ^= 1
	sameKeyOtherStream, err := NewEncoder(testKey(), PerMessage, EncoderOptions{StreamID: otherStream, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	otherSession := session
	otherSession[0] ^= 1
	cases := []struct {
		name   string
		stream [][]byte
		want   error
	}{
		{"signed by another key", [][]byte{other.AppendChallenge(nil, session)}, ErrBadSignature},
		{"two challenges", [][]byte{e.AppendChallenge(nil, session), e.AppendChallenge(nil, session)}, ErrUnexpected},
		{"challenge after the anchor", [][]byte{anchor, e.AppendChallenge(nil, session)}, ErrUnexpected},
		{"anchor of another session", [][]byte{e.AppendChallenge(nil, otherSession), anchor}, ErrUnexpected},
		{"anchor of another stream", [][]byte{sameKeyOtherStream.AppendChallenge(nil, session), anchor}, ErrUnexpected},
		{"truncated", [][]byte{e.AppendChallenge(nil, session)[:HeaderSize+challengeSize-1]}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := NewVerifier(e.PublicKey(), VerifierOptions{Now: fixedNow})
			var err error
			for _, b := range tc.stream {
				if err = v.Feed(b, func(*Message) {}); err != nil {
					break
				}
			}
			if tc.want == nil {
				// Half a frame is no error until the stream ends.
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := v.Challenge(); ok {
					t.Fatal("half a CHALLENGE was taken")
				}
				if err := v.Close(); !errors.Is(err, ErrTruncated) {
					t.Fatalf("Close = %v, want %v", err, ErrTruncated)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzVerifyAuth feeds arbitrary first frames to the daemon's check of a
// client's AUTH: no panics, and a key is accepted only for a frame whose
// signature verifies under the key it names, which must be the authorized one.
func FuzzVerifyAuth(f *testing.F) {
	e := newTestEncoder(f, PerMessage, 0)
	_, session, err := e.Anchor(nil)
	if err != nil {
		f.Fatal(err)
	}
	ch := Challenge{Stream: e.StreamID(), Session: session}
	good, _ := AppendAuth(nil, clientPriv, ch, Binding{}, testNow)
	f.Add(good)
	f.Add(good[:20])
	f.Add(AppendPing(nil, 1))
	f.Add([]byte{Magic, byte(KindAuth), 0, 0, 0, 104})
	pub := clientPriv.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, data []byte) {
		u := NewUpstreamVerifier(nil, e.StreamID(), session, UpstreamOptions{Now: fixedNow})
		d := NewDecoder(u.MaxBody())
		d.Feed(data)
		fr, ok, err := d.Next()
		if err != nil || !ok {
			return
		}
		key, err := u.VerifyAuth(fr, keySet{pub}, Binding{})
		if err != nil {
			var re *RejectError
			if !errors.As(err, &re) {
				t.Fatalf("error %T, want *RejectError", err)
			}
			return
		}
		if !key.Equal(pub) {
			t.Fatalf("accepted key %x, which is not authorized", []byte(key))
		}
	})
}

// A digest mismatch names both digests in hex, once.
func TestBadDigestMessage(t *testing.T) {
	e := newTestEncoder(t, PerMessage, 0)
	anchor, _, _ := e.Anchor(nil)
	frame, _, _ := e.Append(nil, 4, testNow, []byte("x"))
	frame[HeaderSize+8+1+8] ^= 1 // the carried digest's first byte
	v, _ := NewVerifier(e.PublicKey(), VerifierOptions{Now: fixedNow})
	err := v.Feed(append(anchor, frame...), func(*Message) {})
	if !errors.Is(err, ErrBadDigest) {
		t.Fatalf("got %v, want a bad digest", err)
	}
	var re *RejectError
	errors.As(err, &re)
	carried, computed, ok := strings.Cut(strings.TrimPrefix(re.Detail, "carried "), ", computed ")
	if !ok || len(carried) != 64 || len(computed) != 64 {
		t.Fatalf("detail %q: want two 32-byte digests in hex", re.Detail)
	}
}
