// Package tlsconf builds chatty's TLS 1.3 configurations: a listener's
// configuration from PEM files, reloadable while it serves (Server), a
// server certificate derived from the daemon's Ed25519 identity, client
// configurations that verify a server by CA or by a pinned identity key,
// and the channel binding that ties a signed-protocol AUTH to one TLS
// connection. It uses crypto/tls and crypto/x509 only.
package tlsconf

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// selfSignedValidity is how long a self-signed certificate is valid.
// Clients pin its key, not its dates, so the length matters little; the
// daemon makes a new one at every start.
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// SelfSigned returns a certificate for priv's public key, signed by priv
// itself, so that a client can verify the server by pinning the identity's
// public key (see Client.Pin).
func SelfSigned(priv ed25519.PrivateKey, now time.Time) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: serial number: %w", err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "chattyd " + identity.Fingerprint(pub)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, nil
}

// Client describes how a client verifies a server and proves itself.
type Client struct {
	// Pin, when set, accepts only a server whose certificate holds this
	// Ed25519 key: a daemon with tls.self_signed and this identity.
	Pin ed25519.PublicKey
	// CAFile, when set (and Pin is not), verifies the server's
	// certificate against these CAs (PEM) instead of the system's.
	CAFile string
	// ServerName is the name checked in the server's certificate; empty
	// means the host of the address dialled.
	ServerName string
	// CertFile and KeyFile are the client's certificate and key (PEM),
	// for a listener that requires mutual TLS.
	CertFile, KeyFile string
}

// ErrPinMismatch is wrapped by the handshake error of a server whose
// certificate does not hold the pinned key.
var ErrPinMismatch = errors.New("the server's certificate does not hold the pinned identity key")

// Config returns the client configuration for dialling addr.
func (c Client) Config(addr string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: c.ServerName}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg.ServerName = host
	}
	switch {
	case c.Pin != nil:
		if len(c.Pin) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("TLS pin of %d bytes, want an Ed25519 key of %d", len(c.Pin), ed25519.PublicKeySize)
		}
		// The chain is not checked against any CA: the handshake proves
		// that the server holds the private key of its certificate, and
		// that key must be the pinned one.
		cfg.InsecureSkipVerify = true
		pin := c.Pin
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrPinMismatch
			}
			got, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
			if !ok || !bytes.Equal(got, pin) {
				return fmt.Errorf("%w (pinned %s)", ErrPinMismatch, identity.Fingerprint(pin))
			}
			return nil
		}
	case c.CAFile != "":
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA %s: no PEM certificate found", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate %s with key %s: %w", c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Binding returns conn's channel binding for a signed-protocol AUTH: the
// TLS exporter value under signed.BindingLabel on a TLS connection whose
// handshake is complete, or zeros on plain TCP.
func Binding(conn net.Conn) (signed.Binding, error) {
	var b signed.Binding
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return b, nil
	}
	cs := tc.ConnectionState()
	if !cs.HandshakeComplete {
		return b, errors.New("channel binding: the TLS handshake is not complete")
	}
	m, err := cs.ExportKeyingMaterial(signed.BindingLabel, nil, len(b))
	if err != nil {
		return b, fmt.Errorf("channel binding: %w", err)
	}
	copy(b[:], m)
	return b, nil
}
