package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// ServerFiles name the PEM files of a TLS listener.
type ServerFiles struct {
	CertFile     string // certificate chain
	KeyFile      string // its private key
	ClientCAFile string // CAs that sign client certificates; empty asks for none
	// Certificate, when set, is served instead of CertFile and KeyFile:
	// the certificate derived from the daemon's identity (SelfSigned).
	Certificate *tls.Certificate
}

// Server serves TLS 1.3 from PEM files (or a certificate made in
// memory). Reload reads them again; new handshakes use the new files,
// established connections are left alone.
type Server struct {
	cur atomic.Pointer[tls.Config]
}

// NewServer loads the files.
func NewServer(f ServerFiles) (*Server, error) {
	t := &Server{}
	if err := t.Reload(f); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload loads the files again. On error the configuration in force stays.
func (t *Server) Reload(f ServerFiles) error {
	var cert tls.Certificate
	if f.Certificate != nil {
		cert = *f.Certificate
	} else {
		var err error
		if cert, err = tls.LoadX509KeyPair(f.CertFile, f.KeyFile); err != nil {
			return fmt.Errorf("TLS certificate %s with key %s: %w", f.CertFile, f.KeyFile, err)
		}
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
	}
	if f.ClientCAFile != "" {
		pem, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return fmt.Errorf("TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("TLS client CA %s: no PEM certificate found", f.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	t.cur.Store(cfg)
	return nil
}

// Config returns the configuration for tls.NewListener; each handshake
// takes the files loaded last.
func (t *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cfg := t.cur.Load()
			if cfg == nil {
				return nil, errors.New("no TLS configuration loaded")
			}
			return cfg, nil
		},
	}
}
