package harness

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throwaway certificate authority for TLS tests: a CA, a server
// certificate for 127.0.0.1 as PEM files, a client certificate it signed,
// and a client certificate from another CA.
type PKI struct {
	CA       *x509.CertPool  // trusts the CA
	CAFile   string          // the CA certificate, PEM
	CertFile string          // the server certificate, PEM
	KeyFile  string          // its key, PKCS#8 PEM, mode 0600
	Client   tls.Certificate // signed by the CA
	Stranger tls.Certificate // signed by another CA
}

// NewPKI makes a PKI in a temporary directory removed with the test.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	dir := tb.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			tb.Fatal(err)
		}
		return path
	}
	p := &PKI{CA: x509.NewCertPool()}
	ca, caKey := makeCert(tb, nil, nil, "chatty test CA", true)
	p.CA.AddCert(ca)
	p.CAFile = write("ca.pem", "CERTIFICATE", ca.Raw)
	srv, srvKey := makeCert(tb, ca, caKey, "127.0.0.1", false)
	p.CertFile = write("server.pem", "CERTIFICATE", srv.Raw)
	der, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		tb.Fatal(err)
	}
	p.KeyFile = write("server.key", "PRIVATE KEY", der)
	cli, cliKey := makeCert(tb, ca, caKey, "client", false)
	p.Client = tls.Certificate{Certificate: [][]byte{cli.Raw}, PrivateKey: cliKey}
	other, otherKey := makeCert(tb, nil, nil, "another CA", true)
	str, strKey := makeCert(tb, other, otherKey, "stranger", false)
	p.Stranger = tls.Certificate{Certificate: [][]byte{str.Raw}, PrivateKey: strKey}
	return p
}

// makeCert makes an Ed25519 certificate signed by parent, or self-signed
// when parent is nil; a name that is an IP address goes into the SANs.
func makeCert(tb testing.TB, parent *x509.Certificate, parentKey ed25519.PrivateKey, name string, isCA bool) (*x509.Certificate, ed25519.PrivateKey) {
	tb.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert, key
}
