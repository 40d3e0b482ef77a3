package broadcast

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

var (
	clientKey   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xc1}, 32))
	strangerKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x5e}, 32))
)

// readChallenge reads until the client's verifier has the server's
// CHALLENGE.
func (c *signedClient) readChallenge(t *testing.T) signed.Challenge {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if ch, ok := c.v.Challenge(); ok {
			return ch
		}
		n, err := c.Read(c.buf)
		if ferr := c.v.Feed(c.buf[:n], func(*signed.Message) {}); ferr != nil {
			t.Fatalf("verifier rejected the challenge: %v", ferr)
		}
		if err != nil {
			t.Fatalf("no CHALLENGE: %v", err)
		}
	}
}

func (c *signedClient) sendAuth(t *testing.T, key ed25519.PrivateKey, ch signed.Challenge) {
	t.Helper()
	b, err := signed.AppendAuth(nil, key, ch, signed.Binding{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// An authorized client gets everything published since it connected,
// including what was published while it was authenticating, and is
// listed with its key.
func TestSignedAuthAuthorized(t *testing.T) {
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.Chained, Authenticate: true,
		Keys: keySet{clientKey.Public().(ed25519.PublicKey)}})
	c := dialSigned(t, s, pub)
	ch := c.readChallenge(t)
	publish(s, "before auth")
	c.sendAuth(t, clientKey, ch)
	publish(s, "after auth")
	if err := c.readUntil(t, 2); err != nil {
		t.Fatal(err)
	}
	if a, ok := c.v.Anchor(); !ok || a.Session != ch.Session {
		t.Fatalf("anchor %+v (ok %v), want session %v of the challenge", a, ok, ch.Session)
	}
	if got := []string{string(c.got[0].Payload), string(c.got[1].Payload)}; got[0] != "before auth" || got[1] != "after auth" {
		t.Fatalf("delivered %q", got)
	}
	want := identity.Fingerprint(clientKey.Public().(ed25519.PublicKey))
	cl := s.Clients()
	if len(cl) != 1 || cl[0].Key != want {
		t.Fatalf("clients %+v, want one with key %s", cl, want)
	}
	if st := s.Stats(); st.AuthFailed != 0 {
		t.Errorf("auth_failed %d, want 0", st.AuthFailed)
	}
}

// A client that fails authentication receives the CHALLENGE and nothing
// else, whatever was published, and is counted.
func TestSignedAuthRefused(t *testing.T) {
	cases := []struct {
		name   string
		answer func(c *signedClient, ch signed.Challenge) []byte
	}{
		{"unknown key", func(c *signedClient, ch signed.Challenge) []byte {
			b, _ := signed.AppendAuth(nil, strangerKey, ch, signed.Binding{}, time.Now())
			return b
		}},
		{"another session", func(c *signedClient, ch signed.Challenge) []byte {
			ch.Session[3] ^= 1
			b, _ := signed.AppendAuth(nil, clientKey, ch, signed.Binding{}, time.Now())
			return b
		}},
		{"acks instead", func(c *signedClient, ch signed.Challenge) []byte { return signed.AppendAck(nil, 1) }},
		{"garbage", func(c *signedClient, ch signed.Challenge) []byte { return []byte("GET / HTTP/1.1\r\n\r\n") }},
		{"half-close", func(c *signedClient, ch signed.Challenge) []byte { return nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage, Authenticate: true,
				Keys: keySet{clientKey.Public().(ed25519.PublicKey)}})
			publish(s, "secret 1")
			c := dialSigned(t, s, pub)
			publish(s, "secret 2")
			ch := c.readChallenge(t)
			if b := tc.answer(c, ch); b != nil {
				if _, err := c.Write(b); err != nil {
					t.Fatal(err)
				}
			} else {
				c.Conn.(interface{ CloseWrite() error }).CloseWrite()
			}
			publish(s, "secret 3")
			rest, err := io.ReadAll(c)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read after a failed AUTH: %v", err)
			}
			if len(rest) != 0 {
				t.Fatalf("an unauthenticated client received %d more bytes after the CHALLENGE: %q", len(rest), rest)
			}
			poll.Eventually(t, wait, func() bool { return s.Stats().AuthFailed == 1 }, "auth_failed counted")
			poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 0 }, "the client removed")
		})
	}
}

// A client that never answers the CHALLENGE is closed after the
// handshake timeout.
func TestSignedAuthSilentClient(t *testing.T) {
	defer func(d time.Duration) { handshakeTimeout = d }(handshakeTimeout)
	handshakeTimeout = 200 * time.Millisecond
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage, Authenticate: true,
		Keys: keySet{clientKey.Public().(ed25519.PublicKey)}})
	c := dialSigned(t, s, pub)
	c.readChallenge(t)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, _ := io.ReadAll(c); len(rest) != 0 {
		t.Fatalf("a silent client received %q", rest)
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().AuthFailed == 1 }, "auth_failed counted")
}

// Client messages over the rate are refused before their signature is
// checked, counted, and a client that keeps sending them is disconnected.
func TestSignedUpstreamRateLimit(t *testing.T) {
	const burst = 3
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage,
		Keys:         keySet{clientKey.Public().(ed25519.PublicKey)},
		UpstreamRate: 0.001, UpstreamBurst: burst})
	c := dialSigned(t, s, pub)
	publish(s, "hello")
	if err := c.readUntil(t, 1); err != nil {
		t.Fatal(err)
	}
	a, _ := c.v.Anchor()
	cs, err := signed.NewClientSigner(clientKey, a)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for range burst {
		b, _, _ = cs.Append(b, message.Request, time.Now(), []byte("within the burst"))
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := c.readUntil(t, 1+burst); err != nil {
		t.Fatalf("responses within the burst: %v", err)
	}
	for _, m := range c.got[1:] {
		if m.Kind != signed.KindResponse {
			t.Fatalf("got %v, want a RESPONSE", m.Kind)
		}
	}

	// The next one is refused but the client stays; burst in a row close it.
	b, _, _ = cs.Append(b[:0], message.Request, time.Now(), []byte("over the rate"))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().RateLimited == 1 }, "one refusal counted")
	if s.Stats().Connected != 1 {
		t.Fatal("one message over the rate disconnected the client")
	}
	b = b[:0]
	for range burst - 1 {
		b, _, _ = cs.Append(b, message.Request, time.Now(), []byte("over the rate"))
	}
	c.Write(b)
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 0 }, "the flooding client disconnected")
	if st := s.Stats(); st.RateLimited != burst || st.Rejected != 0 {
		t.Errorf("rate_limited %d, rejected %d; want %d and 0", st.RateLimited, st.Rejected, burst)
	}
	if err := c.readUntil(t, 2+burst); err == nil {
		t.Fatalf("a refused message was answered: %+v", c.got[len(c.got)-1])
	}
}

func TestTokenBucket(t *testing.T) {
	if newTokenBucket(0, 5) != nil {
		t.Fatal("a rate of 0 must mean no limit")
	}
	b := newTokenBucket(10, 2)
	t0 := time.Unix(1000, 0)
	allowed := func(at time.Time, n int) int {
		k := 0
		for range n {
			if b.allow(at) {
				k++
			}
		}
		return k
	}
	if n := allowed(t0, 3); n != 2 {
		t.Fatalf("a full bucket of 2 allowed %d of 3 at once", n)
	}
	if b.allow(t0.Add(50 * time.Millisecond)) {
		t.Fatal("half a token was spent")
	}
	if !b.allow(t0.Add(100 * time.Millisecond)) {
		t.Fatal("no token after 1/rate")
	}
	if n := allowed(t0.Add(time.Hour), 3); n != 2 {
		t.Fatalf("after an hour the bucket allowed %d of 3; it must refill to its burst of 2 and no further", n)
	}
}

// Lines published while a client authenticates wait for it, beyond the
// queue limits: it is not a slow consumer before it may be sent anything.
func TestSignedAuthPendingNotSlow(t *testing.T) {
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage, Authenticate: true,
		Keys: keySet{clientKey.Public().(ed25519.PublicKey)}})
	lim := testLimits()
	lim.QueueLines = 100
	s.SetLimits(lim)
	c := dialSigned(t, s, pub)
	ch := c.readChallenge(t)
	const n = 3000 // more than scanEveryLines, so the slow-consumer scan runs
	for i := range n {
		publish(s, fmt.Sprint("line ", i))
	}
	c.sendAuth(t, clientKey, ch)
	if err := c.readUntil(t, n); err != nil {
		t.Fatalf("after %d of %d lines: %v; stats %+v", len(c.got), n, err, s.Stats())
	}
	if st := s.Stats(); st.SlowConsumers != 0 {
		t.Fatalf("slow consumers %d, want 0", st.SlowConsumers)
	}
}

// A server that stops does not wait its drain timeout for a client that
// has not authenticated: there is nothing to deliver to it. The client
// gets the CHALLENGE and the end of the stream.
func TestSignedShutdownMidAuth(t *testing.T) {
	s, pub, stop := startSigned(t, SignedOptions{Mode: signed.PerMessage, Authenticate: true,
		Keys: keySet{clientKey.Public().(ed25519.PublicKey)}})
	lim := testLimits()
	lim.DrainTimeout = time.Hour // runServer's stop fails after 10 s
	s.SetLimits(lim)
	c := dialSigned(t, s, pub)
	c.readChallenge(t)
	publish(s, "not for the unauthenticated")
	stop()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(c); len(rest) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("after the CHALLENGE the client read %q, %v; want the end of the stream", rest, err)
	}
	if st := s.Stats(); st.AuthFailed != 0 {
		t.Errorf("auth_failed %d: a shutdown is not a failed authentication", st.AuthFailed)
	}
}

// swappableKeys is a KeySet a test can change, like a reloaded file.
type swappableKeys struct{ keys atomic.Pointer[keySet] }

func (s *swappableKeys) Contains(pub ed25519.PublicKey) bool { return (*s.keys.Load()).Contains(pub) }

// A client whose key is removed (a reload) is disconnected; one whose key
// stays is not.
func TestSignedDropRevoked(t *testing.T) {
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x0b}, 32))
	keys := &swappableKeys{}
	both := keySet{clientKey.Public().(ed25519.PublicKey), other.Public().(ed25519.PublicKey)}
	keys.keys.Store(&both)
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage, Authenticate: true, Keys: keys})
	stays, goes := dialSigned(t, s, pub), dialSigned(t, s, pub)
	stays.sendAuth(t, clientKey, stays.readChallenge(t))
	goes.sendAuth(t, other, goes.readChallenge(t))
	publish(s, "for both")
	for _, c := range []*signedClient{stays, goes} {
		if err := c.readUntil(t, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.DropRevoked(); n != 0 {
		t.Fatalf("DropRevoked closed %d clients with every key still authorized", n)
	}
	only := keySet{clientKey.Public().(ed25519.PublicKey)}
	keys.keys.Store(&only)
	if n := s.DropRevoked(); n != 1 {
		t.Fatalf("DropRevoked closed %d clients, want 1", n)
	}
	publish(s, "for the one left")
	if err := stays.readUntil(t, 2); err != nil {
		t.Fatal(err)
	}
	if err := goes.readUntil(t, 2); err == nil {
		t.Fatal("the revoked client still received the stream")
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 1 }, "one client left")
}

// readNothing checks that the server closed c without sending anything.
func (c *signedClient) readNothing(t *testing.T, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(c); len(rest) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("%s read %d bytes, %v; want the connection closed with nothing sent", what, len(rest), err)
	}
}

// A flood of strangers who never answer the CHALLENGE holds at most
// MaxUnauthenticated places. The connections over it are closed at once,
// sent nothing (no signed CHALLENGE), and counted apart from max_clients;
// an authorized client keeps the feed, another takes the place a stranger
// leaves, and once the strangers are gone as many new ones are admitted
// again.
func TestSignedMaxUnauthenticated(t *testing.T) {
	const limit, extra = 3, 5
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage, Authenticate: true,
		Keys: keySet{clientKey.Public().(ed25519.PublicKey)}})
	lim := testLimits()
	lim.MaxUnauthenticated = limit
	// Room for the strangers and two authorized clients: strangers who
	// took every place would keep the second out.
	lim.MaxClients = limit + 2
	s.SetLimits(lim)

	early := dialSigned(t, s, pub)
	early.sendAuth(t, clientKey, early.readChallenge(t))
	poll.Eventually(t, wait, func() bool { return s.Stats().Authenticating == 0 }, "the first client authenticated")

	strangers := make([]*signedClient, limit)
	for i := range strangers {
		strangers[i] = dialStranger(t, s, pub)
		strangers[i].readChallenge(t) // admitted
	}
	for i := range extra {
		dialStranger(t, s, pub).readNothing(t, fmt.Sprintf("stranger %d over the limit", limit+i+1))
	}
	st := s.Stats()
	if st.UnauthenticatedRefused != extra || st.Refused != 0 || st.Authenticating != limit || st.Accepted != limit+1 {
		t.Fatalf("unauthenticated_refused %d, refused %d, authenticating %d, accepted %d; want %d, 0, %d, %d",
			st.UnauthenticatedRefused, st.Refused, st.Authenticating, st.Accepted, extra, limit, limit+1)
	}

	publish(s, "during the flood")
	if err := early.readUntil(t, 1); err != nil {
		t.Fatalf("the authorized client during the flood: %v", err)
	}

	strangers[0].Close()
	poll.Eventually(t, wait, func() bool { return s.Stats().Authenticating == limit-1 }, "the place of the stranger who left freed")
	late := dialSigned(t, s, pub)
	late.sendAuth(t, clientKey, late.readChallenge(t))
	publish(s, "after")
	if err := late.readUntil(t, 1); err != nil || string(late.got[0].Payload) != "after" {
		t.Fatalf("the authorized client who came during the flood: %v, got %d messages", err, len(late.got))
	}

	for _, c := range strangers[1:] {
		c.Close()
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Authenticating == 0 }, "no client authenticating")
	for range limit {
		dialStranger(t, s, pub).readChallenge(t) // each admitted again
	}
	if st := s.Stats(); st.UnauthenticatedRefused != extra || st.Authenticating != limit {
		t.Fatalf("unauthenticated_refused %d, authenticating %d; want %d and %d", st.UnauthenticatedRefused, st.Authenticating, extra, limit)
	}
}

// However a client stops authenticating, its place is given back, so
// the count cannot leak: with a limit of one, the next stranger is
// admitted after each.
func TestSignedUnauthenticatedPlaceFreed(t *testing.T) {
	cases := []struct {
		name  string
		leave func(t *testing.T, s *Server, c *signedClient, ch signed.Challenge, keys *swappableKeys)
	}{
		{"authenticated", func(t *testing.T, s *Server, c *signedClient, ch signed.Challenge, keys *swappableKeys) {
			c.sendAuth(t, clientKey, ch)
		}},
		{"unknown key", func(t *testing.T, s *Server, c *signedClient, ch signed.Challenge, keys *swappableKeys) {
			c.sendAuth(t, strangerKey, ch)
			poll.Eventually(t, wait, func() bool { return s.Stats().AuthFailed == 1 }, "auth_failed counted")
		}},
		{"garbage", func(t *testing.T, s *Server, c *signedClient, ch signed.Challenge, keys *swappableKeys) {
			c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		}},
		{"peer gone", func(t *testing.T, s *Server, c *signedClient, ch signed.Challenge, keys *swappableKeys) {
			c.Close()
		}},
		{"handshake timeout", func(t *testing.T, s *Server, c *signedClient, ch signed.Challenge, keys *swappableKeys) {
			c.readNothing(t, "a silent client") // until the server gives up on it
		}},
		{"revoked after authenticating", func(t *testing.T, s *Server, c *signedClient, ch signed.Challenge, keys *swappableKeys) {
			c.sendAuth(t, clientKey, ch)
			poll.Eventually(t, wait, func() bool { return len(s.Clients()) == 1 && s.Clients()[0].Key != "" }, "authenticated")
			keys.keys.Store(&keySet{})
			if n := s.DropRevoked(); n != 1 {
				t.Fatalf("DropRevoked closed %d clients, want 1", n)
			}
			poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 0 }, "the revoked client removed")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "handshake timeout" {
				// Short only for the silent client: the others must
				// finish their handshake under -race on a loaded machine.
				old := handshakeTimeout
				handshakeTimeout = 300 * time.Millisecond
				t.Cleanup(func() { handshakeTimeout = old })
			}
			keys := &swappableKeys{}
			keys.keys.Store(&keySet{clientKey.Public().(ed25519.PublicKey)})
			s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage, Authenticate: true, Keys: keys})
			lim := testLimits()
			lim.MaxUnauthenticated = 1
			s.SetLimits(lim)

			c := dialStranger(t, s, pub)
			ch := c.readChallenge(t)
			dialStranger(t, s, pub).readNothing(t, "a second client while the first authenticates")
			tc.leave(t, s, c, ch, keys)
			poll.Eventually(t, wait, func() bool { return s.Stats().Authenticating == 0 }, "no client authenticating")
			dialStranger(t, s, pub).readChallenge(t)
			if st := s.Stats(); st.UnauthenticatedRefused != 1 {
				t.Errorf("unauthenticated_refused %d, want 1", st.UnauthenticatedRefused)
			}
		})
	}
}

// A server that stops while clients authenticate leaves none counted.
func TestSignedShutdownFreesUnauthenticated(t *testing.T) {
	s, pub, stop := startSigned(t, SignedOptions{Mode: signed.PerMessage, Authenticate: true,
		Keys: keySet{clientKey.Public().(ed25519.PublicKey)}})
	lim := testLimits()
	lim.MaxUnauthenticated = 2
	s.SetLimits(lim)
	for range 2 {
		dialStranger(t, s, pub).readChallenge(t)
	}
	stop()
	if st := s.Stats(); st.Authenticating != 0 || st.Connected != 0 {
		t.Fatalf("after Run returned: authenticating %d, connected %d; want 0 and 0", st.Authenticating, st.Connected)
	}
}

// The limit is for clients yet to authenticate: a signed server that asks
// for no authentication, like the text protocol, admits clients beyond it.
func TestMaxUnauthenticatedWithoutAuth(t *testing.T) {
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage})
	lim := testLimits()
	lim.MaxUnauthenticated = 1
	s.SetLimits(lim)
	cs := []*signedClient{dialSigned(t, s, pub), dialSigned(t, s, pub), dialSigned(t, s, pub)}
	publish(s, "for all three")
	for i, c := range cs {
		if err := c.readUntil(t, 1); err != nil {
			t.Fatalf("client %d: %v", i+1, err)
		}
	}
	if st := s.Stats(); st.UnauthenticatedRefused != 0 || st.Authenticating != 0 {
		t.Fatalf("unauthenticated_refused %d, authenticating %d; want 0 and 0", st.UnauthenticatedRefused, st.Authenticating)
	}
}
