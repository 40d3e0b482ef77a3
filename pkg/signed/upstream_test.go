package signed

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

// keySet is a KeySet for tests.
type keySet []ed25519.PublicKey

func (k keySet) Contains(pub ed25519.PublicKey) bool {
	for _, p := range k {
		if p.Equal(pub) {
			return true
		}
	}
	return false
}

var clientPriv = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xcc}, 32))

// upstreamSetup anchors a connection and returns the client's signer and
// the daemon's verifier for it.
func upstreamSetup(t testing.TB) (*ClientSigner, *UpstreamVerifier, *Encoder) {
	t.Helper()
	e := newTestEncoder(t, PerMessage, 0)
	a, session, err := e.Anchor(nil)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier(e.PublicKey(), VerifierOptions{Now: fixedNow})
	if err := v.Feed(a, func(*Message) {}); err != nil {
		t.Fatal(err)
	}
	info, ok := v.Anchor()
	if !ok || info.Session != session || info.Stream != e.StreamID() {
		t.Fatalf("anchor %+v", info)
	}
	c, err := NewClientSigner(clientPriv, info)
	if err != nil {
		t.Fatal(err)
	}
	u := NewUpstreamVerifier(keySet{clientPriv.Public().(ed25519.PublicKey)}, e.StreamID(), session, UpstreamOptions{Now: fixedNow})
	return c, u, e
}

// decodeOne decodes the single frame of b.
func decodeOne(t testing.TB, b []byte, maxBody int) Frame {
	t.Helper()
	d := NewDecoder(maxBody)
	d.Feed(b)
	f, ok, err := d.Next()
	if err != nil || !ok || d.Buffered() != 0 {
		t.Fatalf("decode: ok=%v err=%v buffered=%d", ok, err, d.Buffered())
	}
	return f
}

func TestUpstreamRoundTrip(t *testing.T) {
	c, u, e := upstreamSetup(t)
	b, digest, err := c.Append(nil, message.Request, testNow, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	up, err := u.Verify(decodeOne(t, b, u.MaxBody()))
	if err != nil {
		t.Fatal(err)
	}
	if up.Kind != KindClientMessage || up.Seq != 1 || up.Type != message.Request || string(up.Payload) != "hello" ||
		!up.Time.Equal(testNow) || up.Digest != digest || !up.Key.Equal(clientPriv.Public().(ed25519.PublicKey)) {
		t.Fatalf("upstream %+v", up)
	}
	// Replaying it is refused; the next one is accepted.
	if _, err := u.Verify(decodeOne(t, b, 0)); !errors.Is(err, ErrReplay) {
		t.Errorf("replay: %v", err)
	}
	b2, _, _ := c.Append(nil, message.Info, testNow, []byte("second"))
	if up, err := u.Verify(decodeOne(t, b2, 0)); err != nil || up.Seq != 2 {
		t.Errorf("second: %+v %v", up, err)
	}
	if u.Accepted() != 2 || u.Rejected(ReasonReplay) != 1 {
		t.Errorf("accepted %d, replays %d", u.Accepted(), u.Rejected(ReasonReplay))
	}
	// The daemon's response verifies on this connection, naming the request.
	resp, err := e.AppendResponse(nil, &Response{Session: c.session, Request: digest, Type: message.Response, Time: testNow, Payload: []byte("Acknowledge: hello")})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier(e.PublicKey(), VerifierOptions{Now: fixedNow})
	a := e.appendAnchor(nil, c.session, testNow.UnixNano())
	var got *Message
	if err := v.Feed(append(a, resp...), func(m *Message) { c := *m; got = &c }); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Request != digest {
		t.Errorf("response %+v", got)
	}
	// Acks and pings.
	for _, tc := range []struct {
		b    []byte
		kind Kind
	}{{AppendAck(nil, 77), KindAck}, {AppendPing(nil, 77), KindPing}} {
		up, err := u.Verify(decodeOne(t, tc.b, 0))
		if err != nil || up.Kind != tc.kind || up.Seq != 77 {
			t.Errorf("%v: %+v %v", tc.kind, up, err)
		}
	}
}

func TestUpstreamRejects(t *testing.T) {
	c, u, e := upstreamSetup(t)
	stranger := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xdd}, 32))
	good := func() []byte {
		b, _, err := c.Append(nil, message.Warning, testNow, []byte("disk almost full"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 1; return b }
	anchorOf := func(s Session) AnchorInfo { return AnchorInfo{Stream: e.StreamID(), Session: s} }
	otherSession, _ := NewClientSigner(clientPriv, anchorOf(Session{9}))
	strangerSigner, _ := NewClientSigner(stranger, anchorOf(c.session))
	fromOther, _, _ := otherSession.Append(nil, message.Info, testNow, []byte("x"))
	fromStranger, _, _ := strangerSigner.Append(nil, message.Info, testNow, []byte("x"))
	late, _, _ := c.Append(nil, message.Info, testNow.Add(time.Hour), []byte("x"))
	big, _, _ := c.Append(nil, message.Info, testNow, make([]byte, DefaultUpstreamMaxPayload+1))
	badType := good()
	badType[HeaderSize+32+8] = 0 // type byte; the digest no longer matches either

	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"payload flipped", flip(good(), len(good())-1), ErrBadDigest},
		{"signature flipped", flip(good(), HeaderSize+32+8+1+8+32), ErrBadSignature},
		{"key flipped", flip(good(), HeaderSize), ErrUnauthorized},
		{"stranger", fromStranger, ErrUnauthorized},
		{"other session", fromOther, ErrBadDigest},
		{"late", late, ErrTimestamp},
		{"too big", big, ErrOversized},
		{"bad type", badType, ErrBadDigest},
		{"short", append(appendHeader(nil, KindClientMessage, 10), make([]byte, 10)...), ErrMalformed},
		{"short ack", append(appendHeader(nil, KindAck, 3), 1, 2, 3), ErrMalformed},
		{"downstream kind", AppendPong(nil, 1), ErrUnexpected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := u.Verify(decodeOne(t, tt.b, MaxBody))
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if u.Rejected(ReasonOf(err)) == 0 {
				t.Error("not counted")
			}
		})
	}
	if _, err := NewClientSigner(clientPriv[:3], AnchorInfo{}); err == nil {
		t.Error("short key accepted")
	}
	if _, _, err := c.Append(nil, 9, testNow, nil); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("type 9: %v", err)
	}
	// A nil key set authorizes nobody.
	none := NewUpstreamVerifier(nil, e.StreamID(), c.session, UpstreamOptions{Now: fixedNow})
	if _, err := none.Verify(decodeOne(t, good(), 0)); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("nil keys: %v", err)
	}
	// The limit on the decoder stops an oversized frame before its body.
	d := NewDecoder(u.MaxBody())
	d.Feed(big[:HeaderSize])
	if _, _, err := d.Next(); !errors.Is(err, ErrOversized) {
		t.Errorf("decoder limit: %v", err)
	}
}
