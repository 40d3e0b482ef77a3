package broadcast

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// startSigned runs a signed server until the test ends (or stop is
// called) and returns it with the key that verifies it.
func startSigned(t *testing.T, o SignedOptions) (s *Server, pub ed25519.PublicKey, stop func()) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Key = priv
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err = NewSigned(ln, testLimits(), o, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	stop = runServer(t, s)
	return s, pub, stop
}

// signedClient reads a signed server with a Verifier.
type signedClient struct {
	net.Conn
	v    *signed.Verifier
	got  []signed.Message // delivered, payloads copied
	buf  []byte
	acks bool // acknowledge every verified message
}

// dialSigned connects to s and waits until the server has admitted the
// connection.
func dialSigned(t *testing.T, s *Server, pub ed25519.PublicKey) *signedClient {
	t.Helper()
	want := s.Stats().Accepted + 1
	c := dialStranger(t, s, pub)
	poll.Eventually(t, wait, func() bool { return s.Stats().Accepted >= want }, "client registered")
	return c
}

// dialStranger connects to s without waiting to be admitted: the server
// may refuse it.
func dialStranger(t *testing.T, s *Server, pub ed25519.PublicKey) *signedClient {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	v, err := signed.NewVerifier(pub, signed.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &signedClient{Conn: conn, v: v, buf: make([]byte, 64<<10)}
}

// readUntil reads and verifies until n messages have been delivered in
// all, acknowledging each when acks is set. It returns the read error
// that ended it early, if any.
func (c *signedClient) readUntil(t *testing.T, n int) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(c.got) < n {
		k, err := c.Read(c.buf)
		var ackBuf []byte
		if ferr := c.v.Feed(c.buf[:k], func(m *signed.Message) {
			mc := *m
			mc.Payload = append([]byte(nil), m.Payload...)
			c.got = append(c.got, mc)
			if c.acks && m.Kind != signed.KindPong {
				ackBuf = signed.AppendAck(ackBuf, m.Seq)
			}
		}); ferr != nil {
			t.Fatalf("verifier rejected the stream: %v", ferr)
		}
		if len(ackBuf) > 0 {
			if _, err := c.Write(ackBuf); err != nil {
				t.Fatal(err)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Every client verifies every frame, in both modes, across chunks; a
// client that joins mid-stream verifies its anchor and gets exactly the
// messages published after it joined; acks by sequence number are counted.
func TestSignedClientsVerifyEverything(t *testing.T) {
	for _, mode := range []signed.Mode{signed.Chained, signed.PerMessage} {
		t.Run(mode.String(), func(t *testing.T) {
			s, pub, _ := startSigned(t, SignedOptions{Mode: mode, CheckpointEvery: 100})
			early := dialSigned(t, s, pub)
			early.acks = true
			const n, width = 400, 2000 // 800 KB: several chunks
			lines := make([]string, n)
			for i := range lines {
				lines[i] = fmt.Sprintf("%05d %s", i+1, strings.Repeat("x", width))
			}
			publish(s, lines[:n/2]...)
			late := dialSigned(t, s, pub)
			for i := n / 2; i < n; i += 50 {
				publish(s, lines[i:i+50]...)
			}
			if err := early.readUntil(t, n); err != nil {
				t.Fatal(err)
			}
			if err := late.readUntil(t, n/2); err != nil {
				t.Fatal(err)
			}
			for i, m := range early.got {
				if m.Seq != uint64(i+1) || string(m.Payload) != lines[i] {
					t.Fatalf("early client's message %d: seq %d %.10q", i, m.Seq, m.Payload)
				}
			}
			if a, ok := late.v.Anchor(); !ok || a.Seq != n/2 || a.Mode != mode {
				t.Errorf("late client's anchor: %+v, %v; want seq %d", a, ok, n/2)
			}
			for i, m := range late.got {
				if m.Seq != uint64(n/2+i+1) || string(m.Payload) != lines[n/2+i] {
					t.Fatalf("late client's message %d: seq %d %.10q", i, m.Seq, m.Payload)
				}
			}
			poll.Eventually(t, wait, func() bool { return s.Stats().AcksGood == n }, "acks counted")

			// An ack of a message never sent is a mismatch.
			early.Write(signed.AppendAck(nil, n+5))
			poll.Eventually(t, wait, func() bool { return s.Stats().AcksMismatched == 1 }, "bad ack counted")
			if st := s.Stats(); st.Lines != n || st.Rejected != 0 {
				t.Errorf("stats: %+v", st)
			}
		})
	}
}

// A quiet feed does not hold chained messages back: a checkpoint follows
// within the interval without more lines. PING is answered with PONG.
func TestSignedCheckpointTimerAndPing(t *testing.T) {
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.Chained, CheckpointEvery: 1000, CheckpointInterval: 20 * time.Millisecond})
	c := dialSigned(t, s, pub)
	publish(s, "one", "two", "three")
	if err := c.readUntil(t, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(signed.AppendPing(nil, 77)); err != nil {
		t.Fatal(err)
	}
	if err := c.readUntil(t, 4); err != nil {
		t.Fatal(err)
	}
	if m := c.got[3]; m.Kind != signed.KindPong || m.Seq != 77 {
		t.Errorf("answer to PING: %+v", m)
	}
	if st := c.v.Stats(); st.Checkpoints < 1 {
		t.Errorf("verifier stats %+v; want a checkpoint", st)
	}
}

// Shutdown appends a last checkpoint: messages published just before are
// delivered, then the stream ends cleanly.
func TestSignedFinalCheckpoint(t *testing.T) {
	s, pub, stop := startSigned(t, SignedOptions{Mode: signed.Chained, CheckpointEvery: 1000, CheckpointInterval: time.Hour})
	c := dialSigned(t, s, pub)
	publish(s, "a", "b")
	stop()
	if err := c.readUntil(t, 2); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if len(c.got) != 2 {
		t.Fatalf("got %d messages before the end; want 2", len(c.got))
	}
	if err := c.v.Close(); err != nil {
		t.Errorf("stream end: %v", err)
	}
}

// A frame the server rejects is counted and closes the client: the
// signed listener's counterpart of the text listener's unknown lines,
// which it never counts.
func TestSignedRejectedFrameCloses(t *testing.T) {
	frame := func(k signed.Kind, body int) []byte {
		return append(binary.BigEndian.AppendUint32([]byte{signed.Magic, byte(k)}, uint32(body)), make([]byte, body)...)
	}
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"text line", []byte("KEEP_ALIVE\n")},
		{"unknown kind", frame(0x7e, 8)},
		{"a server's kind", frame(signed.KindPong, 8)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage})
			c := dialSigned(t, s, pub)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			poll.Eventually(t, wait, func() bool { return s.Stats().Rejected == 1 }, "rejection counted")
			poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 0 }, "client gone")
			if n := s.Stats().UnknownLines; n != 0 {
				t.Errorf("%d unknown lines counted on a signed listener", n)
			}
		})
	}
}

// keySet is a signed.KeySet of fixed keys.
type keySet []ed25519.PublicKey

func (k keySet) Contains(pub ed25519.PublicKey) bool {
	for _, x := range k {
		if x.Equal(pub) {
			return true
		}
	}
	return false
}

// A Request signed by an authorized key is answered with a RESPONSE for
// that connection, naming the request by its digest; a client message
// from another key is rejected and closes its client.
func TestSignedRequestResponse(t *testing.T) {
	clientPub, clientPriv, _ := ed25519.GenerateKey(nil)
	_, strangerPriv, _ := ed25519.GenerateKey(nil)
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.Chained, Keys: keySet{clientPub}})

	for _, tc := range []struct {
		name       string
		priv       ed25519.PrivateKey
		wantAnswer bool
	}{
		{"authorized", clientPriv, true},
		{"stranger", strangerPriv, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rejected := s.Stats().Rejected
			c := dialSigned(t, s, pub)
			publish(s, "before the request")
			if err := c.readUntil(t, 1); err != nil {
				t.Fatal(err)
			}
			a, _ := c.v.Anchor()
			cs, err := signed.NewClientSigner(tc.priv, a)
			if err != nil {
				t.Fatal(err)
			}
			frame, digest, err := cs.Append(nil, message.Request, time.Now(), []byte("hello"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(frame); err != nil {
				t.Fatal(err)
			}
			if !tc.wantAnswer {
				poll.Eventually(t, wait, func() bool { return s.Stats().Rejected == rejected+1 }, "rejection counted")
				if err := c.readUntil(t, 2); err == nil {
					t.Errorf("a stranger's request got %+v", c.got[1])
				}
				return
			}
			if err := c.readUntil(t, 2); err != nil {
				t.Fatal(err)
			}
			r := c.got[1]
			if r.Kind != signed.KindResponse || r.Request != digest || r.Type != message.Response || string(r.Payload) != "Acknowledge: hello" {
				t.Errorf("response %+v; want one to the request %x", r, digest)
			}
		})
	}
}
