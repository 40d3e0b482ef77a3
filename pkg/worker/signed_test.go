package worker

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/chatty-dev/chatty/internal/broadcast"
	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// signedServer runs a broadcast server of the signed protocol for the test.
func signedServer(t *testing.T, mode signed.Mode) (*broadcast.Server, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := broadcast.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := broadcast.NewSigned(ln, broadcast.Limits{
		MaxClientLine: 4096, QueueBytes: 64 << 20, QueueLines: 1 << 20, DrainTimeout: time.Second,
	}, broadcast.SignedOptions{Key: priv, Mode: mode}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// A probe connection makes sure the server's goroutines are all up
	// before start counts them.
	probe, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Accepted == 1 }, "probe accepted")
	probe.Close()
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 0 }, "probe gone")
	return s, pub
}

// A signed worker verifies the stream, acknowledges every message by its
// sequence number and keeps alive with PING, in both modes.
func TestSignedWorker(t *testing.T) {
	for _, mode := range []signed.Mode{signed.Chained, signed.PerMessage} {
		t.Run(mode.String(), func(t *testing.T) {
			s, pub := signedServer(t, mode)
			o := opts(s.Addr().String())
			o.PublicKey = pub
			o.KeepAliveMin, o.KeepAliveMax, o.KeepAliveTimeout = 10*time.Millisecond, 20*time.Millisecond, 5*time.Second
			_, res := start(t, o)
			poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 1 }, "worker connected")
			const n = 300
			for i := range n {
				s.Publish([][]byte{fmt.Appendf(nil, "line %d", i)})
			}
			poll.Eventually(t, wait, func() bool { return s.Stats().AcksGood == n }, "every message acknowledged")
			poll.Eventually(t, wait, func() bool { return s.Stats().KeepAlives >= 3 }, "keep-alives answered")
			if st := s.Stats(); st.AcksMismatched != 0 || st.Rejected != 0 {
				t.Errorf("server stats %+v", st)
			}
			select {
			case err := <-res:
				t.Fatalf("worker ended: %v", err)
			default:
			}
		})
	}
}

// A worker given another key than the server's refuses the stream.
func TestSignedWorkerWrongKey(t *testing.T) {
	s, _ := signedServer(t, signed.Chained)
	other, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	o := opts(s.Addr().String())
	o.PublicKey = other
	_, res := start(t, o)
	wantExit(t, result(t, res), ErrVerify)
}

// A worker whose stream skips a message exits at the gap, and its last
// log line names the reason and counts the messages it verified.
func TestSignedWorkerLogsRejection(t *testing.T) {
	srv := newServer(t)
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := signed.NewEncoder(priv, signed.PerMessage, signed.EncoderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stream, _, err := enc.Anchor(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		frame, _, err := enc.Append(nil, message.Info, time.Now(), fmt.Appendf(nil, "line %d", i))
		if err != nil {
			t.Fatal(err)
		}
		if i != 3 {
			stream = append(stream, frame...)
		}
	}
	o := opts(srv.addr())
	o.PublicKey = pub
	logger, hook := logtest.NewNullLogger()
	_, res := startLogged(t, o, logrus.NewEntry(logger))
	if _, err := srv.accept(t).Write(stream); err != nil {
		t.Fatal(err)
	}
	wantExit(t, result(t, res), ErrVerify)

	e := hook.LastEntry()
	if e == nil || e.Level != logrus.WarnLevel || !strings.HasPrefix(e.Message, "Exiting: ") {
		t.Fatalf("last log entry %+v; want the warning that the worker exits", e)
	}
	want := logrus.Fields{"reason": "gap", "verified": uint64(2), "discarded": uint64(0)}
	for k, v := range want {
		if e.Data[k] != v {
			t.Errorf("exit log field %s = %v (%T), want %v; fields %v", k, e.Data[k], e.Data[k], v, e.Data)
		}
	}
}

// A worker on a listener that requires authentication answers the
// CHALLENGE with an AUTH before anything else, whenever the challenge
// comes: no PING goes out before the stream has started, however short
// its keep-alive interval, and keep-alives begin once it has.
func TestSignedWorkerAuthenticatesFirst(t *testing.T) {
	srv := newServer(t)
	pub, priv, _ := ed25519.GenerateKey(nil)
	_, wkey, _ := ed25519.GenerateKey(nil)
	enc, err := signed.NewEncoder(priv, signed.PerMessage, signed.EncoderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := opts(srv.addr())
	o.PublicKey, o.Key = pub, wkey
	o.KeepAliveMin, o.KeepAliveMax = 10*time.Millisecond, 10*time.Millisecond
	start(t, o)
	c := srv.accept(t)

	// Twenty keep-alive intervals with no challenge: nothing may be sent.
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 4096)
	if n, err := c.Read(buf); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("before the challenge the worker sent %q (%v)", buf[:n], err)
	}

	anchor, session, err := enc.Anchor(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(enc.AppendChallenge(nil, session)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := signed.NewDecoder(1 << 16)
	next := func() signed.Frame {
		t.Helper()
		for {
			f, ok, err := dec.Next()
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				return f
			}
			n, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			dec.Feed(buf[:n])
		}
	}
	if f := next(); f.Kind != signed.KindAuth {
		t.Fatalf("first frame %v, want AUTH", f.Kind)
	}
	if _, err := c.Write(anchor); err != nil {
		t.Fatal(err)
	}
	if f := next(); f.Kind != signed.KindPing {
		t.Fatalf("after the anchor: %v, want PING", f.Kind)
	}
}
