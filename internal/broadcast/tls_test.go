package broadcast

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/test/harness"
)

// startTLSServer runs a server with a plain listener and a TLS one.
func startTLSServer(t *testing.T, files tlsconf.ServerFiles) (*Server, string) {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsconf.NewServer(files)
	if err != nil {
		t.Fatal(err)
	}
	tln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, testLimits(), logging.Discard())
	s.AddListener(tls.NewListener(tln, tc.Config()))
	runServer(t, s)
	return s, tln.Addr().String()
}

func dialTLS(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, *bufio.Reader, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c), nil
}

// The TLS listener's clients get the same feed as the plain ones.
func TestTLSListenerSharesTheFeed(t *testing.T) {
	pki := harness.NewPKI(t)
	s, addr := startTLSServer(t, tlsconf.ServerFiles{CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	plain := dial(t, s)
	c, r, err := dialTLS(t, addr, &tls.Config{RootCAs: pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("KEEP_ALIVE\n"))
	if got, _ := r.ReadString('\n'); got != "KEEP_ALIVE_ACK\n" {
		t.Fatalf("keep-alive over TLS answered %q", got)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("TLS version %x, want 1.3", v)
	}
	publish(s, "one", "two")
	for _, want := range []string{"one\n", "two\n"} {
		if got, _ := r.ReadString('\n'); got != want {
			t.Errorf("TLS client got %q, want %q", got, want)
		}
		if got := plain.readLine(t) + "\n"; got != want {
			t.Errorf("plain client got %q, want %q", got, want)
		}
	}
	if addrs := s.Addrs(); len(addrs) != 2 || addrs[1].String() != addr {
		t.Errorf("Addrs = %v", addrs)
	}
}

func TestTLSRefusesOldVersions(t *testing.T) {
	pki := harness.NewPKI(t)
	s, addr := startTLSServer(t, tlsconf.ServerFiles{CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	_, _, err := dialTLS(t, addr, &tls.Config{RootCAs: pki.CA, MaxVersion: tls.VersionTLS12})
	if err == nil {
		t.Fatal("a TLS 1.2 client was accepted")
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Handshakes == 1 }, "handshake failure counted")
}

// With a client CA, a client without a certificate, or with one from
// another CA, receives nothing and is counted; a client with a good
// certificate gets the feed.
func TestMutualTLS(t *testing.T) {
	pki := harness.NewPKI(t)
	s, addr := startTLSServer(t, tlsconf.ServerFiles{CertFile: pki.CertFile, KeyFile: pki.KeyFile, ClientCAFile: pki.CAFile})
	for i, cfg := range []*tls.Config{
		{RootCAs: pki.CA},
		{RootCAs: pki.CA, Certificates: []tls.Certificate{pki.Stranger}},
	} {
		c, r, err := dialTLS(t, addr, cfg)
		if err != nil {
			continue // refused during the handshake itself
		}
		publish(s, "secret")
		if line, err := r.ReadString('\n'); err == nil {
			t.Errorf("client %d without a valid certificate read %q", i, line)
		}
		c.Close()
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Handshakes == 2 }, "both refusals counted")

	c, r, err := dialTLS(t, addr, &tls.Config{RootCAs: pki.CA, Certificates: []tls.Certificate{pki.Client}})
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("KEEP_ALIVE\n"))
	if got, _ := r.ReadString('\n'); got != "KEEP_ALIVE_ACK\n" {
		t.Fatalf("got %q", got)
	}
	publish(s, "for you")
	if got, _ := r.ReadString('\n'); got != "for you\n" {
		t.Errorf("got %q", got)
	}
}

// startTLSOnly runs a server whose only listener is TLS, with lim; stop
// ends it and waits for Run.
func startTLSOnly(t *testing.T, pki *harness.PKI, lim Limits) (s *Server, stop func()) {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsconf.NewServer(tlsconf.ServerFiles{CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	s = New(tls.NewListener(ln, tc.Config()), lim, logging.Discard())
	return s, runServer(t, s)
}

// With idle_timeout 0 (disabled), a TLS client is not closed when the
// handshake's deadline would have passed: a witness connected after it
// that never says hello is closed at its own handshake deadline, and the
// client is still served.
func TestTLSNoIdleTimeoutKeepsClients(t *testing.T) {
	old := handshakeTimeout
	handshakeTimeout = time.Second // room for a handshake on a loaded machine
	t.Cleanup(func() { handshakeTimeout = old })
	pki := harness.NewPKI(t)
	lim := testLimits()
	lim.IdleTimeout = 0
	s, stop := startTLSOnly(t, pki, lim)
	defer stop()

	c, r, err := dialTLS(t, s.Addr().String(), &tls.Config{RootCAs: pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("KEEP_ALIVE\n"))
	if got, _ := r.ReadString('\n'); got != "KEEP_ALIVE_ACK\n" {
		t.Fatalf("got %q", got)
	}
	witness, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer witness.Close()
	witness.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(witness); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a client that never said hello was not closed at the handshake deadline")
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Handshakes == 1 }, "the witness's failed handshake counted")
	c.Write([]byte("KEEP_ALIVE\n"))
	if got, err := r.ReadString('\n'); got != "KEEP_ALIVE_ACK\n" {
		t.Fatalf("after the handshake deadline: %q, %v", got, err)
	}
	c.Close()
}

// At max_clients, a connection to the TLS listener that never says hello
// does not stop the listener from admitting the next client.
func TestTLSRefusalDoesNotBlockAccepting(t *testing.T) {
	pki := harness.NewPKI(t)
	lim := testLimits()
	lim.MaxClients = 1
	s, stop := startTLSOnly(t, pki, lim)
	defer stop()
	addr := s.Addr().String()

	first, r, err := dialTLS(t, addr, &tls.Config{RootCAs: pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	first.Write([]byte("KEEP_ALIVE\n"))
	r.ReadString('\n')
	silent, err := net.Dial("tcp", addr) // over the limit, and mute
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	poll.Eventually(t, wait, func() bool { return s.Stats().Refused == 1 }, "the mute connection refused")
	first.Close()
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 0 }, "the first client gone")

	next, r, err := dialTLS(t, addr, &tls.Config{RootCAs: pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	next.Write([]byte("KEEP_ALIVE\n"))
	if got, err := r.ReadString('\n'); got != "KEEP_ALIVE_ACK\n" {
		t.Fatalf("the next TLS client: %q, %v", got, err)
	}
	next.Close()
}

// A TLS client, read by a blocked goroutine rather than the poller,
// follows the same idle rule: one that never sent a keep-alive outlives
// idle_timeout, while one connected after it that kept alive once is
// closed, and the silent one still receives a line published after.
func TestTLSSilentClientOutlivesIdleTimeout(t *testing.T) {
	pki := harness.NewPKI(t)
	lim := testLimits()
	lim.IdleTimeout = 300 * time.Millisecond
	s, stop := startTLSOnly(t, pki, lim)
	defer stop()
	silent, silentR, err := dialTLS(t, s.Addr().String(), &tls.Config{RootCAs: pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	speaker, speakerR, err := dialTLS(t, s.Addr().String(), &tls.Config{RootCAs: pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	speaker.Write([]byte("KEEP_ALIVE\n"))
	if got, err := speakerR.ReadString('\n'); got != "KEEP_ALIVE_ACK\n" {
		t.Fatalf("speaker got %q, %v", got, err)
	}
	if _, err := speakerR.ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the TLS client that kept alive once was not closed at the idle timeout (%v)", err)
	}
	poll.Eventually(t, wait, func() bool { st := s.Stats(); return st.IdleClosed == 1 && st.Connected == 1 }, "idle close counted and the client gone")
	publish(s, "still here")
	if got, err := silentR.ReadString('\n'); got != "still here\n" {
		t.Fatalf("silent TLS client got %q, %v", got, err)
	}
	if st := s.Stats(); st.IdleClosed != 1 || st.Connected != 1 {
		t.Errorf("idle closed %d, connected %d; want 1 and 1", st.IdleClosed, st.Connected)
	}
	silent.Close()
}
