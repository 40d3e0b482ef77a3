package tlsconf

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/signed"
)

func key(b byte) ed25519.PrivateKey { return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, 32)) }

// handshake runs a TLS server with cert on loopback and a client with
// cfg; it returns both ends' channel bindings and errors.
func handshake(t *testing.T, cert tls.Certificate, cfg *tls.Config) (cb, sb signed.Binding, clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		err error
		b   signed.Binding
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		b, err := Binding(tc)
		// Wait for the client to finish with the connection.
		tc.Read(make([]byte, 1))
		done <- result{err: err, b: b}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	clientErr = tc.Handshake()
	if clientErr == nil {
		cb, clientErr = Binding(tc)
	}
	tc.Close()
	r := <-done
	return cb, r.b, clientErr, r.err
}

func TestSelfSignedPinned(t *testing.T) {
	id := key(1)
	cert, err := SelfSigned(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.Leaf.PublicKey.(ed25519.PublicKey); !got.Equal(id.Public()) {
		t.Fatal("the certificate does not hold the identity's key")
	}

	cfg, err := Client{Pin: id.Public().(ed25519.PublicKey)}.Config("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	cb, sb, cerr, serr := handshake(t, cert, cfg)
	if cerr != nil || serr != nil {
		t.Fatalf("pinned handshake: client %v, server %v", cerr, serr)
	}
	if cb != sb || cb == (signed.Binding{}) {
		t.Errorf("bindings differ or are empty: client %x, server %x", cb, sb)
	}

	// The same server with another pin is refused by the client.
	cfg, err = Client{Pin: key(2).Public().(ed25519.PublicKey)}.Config("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	_, _, cerr, _ = handshake(t, cert, cfg)
	if !errors.Is(cerr, ErrPinMismatch) {
		t.Fatalf("wrong pin: %v, want %v", cerr, ErrPinMismatch)
	}

	// Without a pin or CA, the self-signed certificate is not trusted.
	cfg, err = Client{}.Config("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, cerr, _ = handshake(t, cert, cfg); cerr == nil {
		t.Fatal("a self-signed certificate was trusted without a pin")
	}
}

// Two connections get two different bindings: an AUTH cannot move.
func TestBindingPerConnection(t *testing.T) {
	id := key(3)
	cert, err := SelfSigned(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := Client{Pin: id.Public().(ed25519.PublicKey)}.Config("127.0.0.1:1")
	b1, _, _, _ := handshake(t, cert, cfg)
	b2, _, _, _ := handshake(t, cert, cfg)
	if b1 == b2 {
		t.Fatal("two connections share a channel binding")
	}
	var zero signed.Binding
	plain, err := Binding(&net.TCPConn{})
	if err != nil || plain != zero {
		t.Fatalf("plain TCP binding %x, %v; want zeros", plain, err)
	}
}

func TestCAFile(t *testing.T) {
	id := key(4)
	cert, err := SelfSigned(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Client{CAFile: ca}.Config("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || cfg.InsecureSkipVerify {
		t.Fatal("a CA file must verify against it")
	}
	if _, err := (Client{CAFile: filepath.Join(dir, "missing.pem")}).Config("x:1"); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("not PEM"), 0o644)
	if _, err := (Client{CAFile: empty}).Config("x:1"); err == nil {
		t.Fatal("a CA file without certificates was accepted")
	}
	if _, err := (Client{Pin: ed25519.PublicKey{1, 2}}).Config("x:1"); err == nil {
		t.Fatal("a pin of the wrong size was accepted")
	}
}
