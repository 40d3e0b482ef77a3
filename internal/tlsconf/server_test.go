package tlsconf

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
)

// serveTLS runs a listener that completes the handshake of each
// connection with cfg and closes it; it stops at the test's end.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				if tc.Handshake() == nil {
					tc.Read(make([]byte, 1)) // until the client closes
				}
			})
		}
	})
	return ln.Addr().String()
}

// Reload serves new handshakes with the new files; a reload that fails
// keeps the files in force.
func TestServerReload(t *testing.T) {
	oldPKI, newPKI := harness.NewPKI(t), harness.NewPKI(t)
	tc, err := NewServer(ServerFiles{CertFile: oldPKI.CertFile, KeyFile: oldPKI.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, tc.Config())
	trusts := func(pki *harness.PKI) bool {
		d := &net.Dialer{Timeout: 10 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pki.CA})
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	if !trusts(oldPKI) || trusts(newPKI) {
		t.Fatal("before the reload, the old certificate must be served")
	}
	if err := tc.Reload(ServerFiles{CertFile: newPKI.CertFile, KeyFile: newPKI.KeyFile}); err != nil {
		t.Fatal(err)
	}
	if !trusts(newPKI) || trusts(oldPKI) {
		t.Fatal("after the reload, the new certificate must be served")
	}
	if err := tc.Reload(ServerFiles{CertFile: newPKI.CertFile, KeyFile: oldPKI.KeyFile}); err == nil {
		t.Fatal("a certificate with another certificate's key was accepted")
	}
	if !trusts(newPKI) {
		t.Error("a failed reload replaced the certificate in force")
	}
}

// Only TLS 1.3 is served.
func TestServerRefusesOldVersions(t *testing.T) {
	pki := harness.NewPKI(t)
	tc, err := NewServer(ServerFiles{CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, tc.Config())
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pki.CA, MaxVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
		t.Fatal("a TLS 1.2 client was accepted")
	}
}

func TestServerErrorsNameTheFile(t *testing.T) {
	pki := harness.NewPKI(t)
	missing := filepath.Join(t.TempDir(), "nope.pem")
	for _, f := range []ServerFiles{
		{CertFile: missing, KeyFile: pki.KeyFile},
		{CertFile: pki.CertFile, KeyFile: pki.KeyFile, ClientCAFile: missing},
		{CertFile: pki.CertFile, KeyFile: pki.KeyFile, ClientCAFile: pki.KeyFile}, // not a certificate
	} {
		_, err := NewServer(f)
		if err == nil {
			t.Errorf("%+v accepted", f)
			continue
		}
		if !strings.Contains(err.Error(), filepath.Base(missing)) && !strings.Contains(err.Error(), filepath.Base(pki.KeyFile)) {
			t.Errorf("error %q does not name the file", err)
		}
	}
}
