// Package clientopts holds the command-line options shared by chatty's
// clients of the broadcast listeners (chattyd worker, chattyctl watch):
// how to reach a TLS listener and which key to authenticate with.
package clientopts

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/pkg/identity"
)

// CredentialsFDEnv is the environment variable through which chattyd's
// pool names the descriptor of a worker's key (pool.CredentialsFDEnv).
const CredentialsFDEnv = "CHATTY_CREDENTIALS_FD"

// Flags returns the TLS and authentication flags.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "tls", Usage: "connect with TLS 1.3 (verify the server with --pin or --ca, else the system's CAs)"},
		&cli.StringFlag{Name: "pin", Usage: "with --tls: accept only a server whose certificate holds the Ed25519 key of this public key `FILE` (.pub or PEM): chattyd with tls.self_signed"},
		&cli.StringFlag{Name: "ca", Usage: "with --tls: verify the server's certificate against the CAs of this PEM `FILE`"},
		&cli.StringFlag{Name: "server-name", Usage: "with --tls --ca: the `NAME` the server's certificate must hold (default: the host of the address)"},
		&cli.StringFlag{Name: "cert", Usage: "with --tls: present this client certificate (PEM `FILE`), for mutual TLS"},
		&cli.StringFlag{Name: "cert-key", Usage: "with --cert: the client certificate's private key (PEM `FILE`)"},
		&cli.StringFlag{Name: "identity", Usage: "authenticate to a signed listener with this private key `FILE` (PKCS#8 PEM, mode 0600; chattyd keygen makes one)"},
		&cli.IntFlag{Name: "credentials-fd", Usage: "read the private key to authenticate with from file descriptor `N` (set by chattyd's pool)", EnvVars: []string{CredentialsFDEnv}},
	}
}

// UsageError is a wrong combination of flags.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error { return &UsageError{fmt.Sprintf(format, args...)} }

// TLS returns the TLS configuration for dialling addr, or nil without --tls.
func TLS(c *cli.Context, addr string) (*tls.Config, error) {
	if !c.Bool("tls") {
		for _, f := range []string{"pin", "ca", "server-name", "cert", "cert-key"} {
			if c.IsSet(f) {
				return nil, Usagef("--%s is for --tls", f)
			}
		}
		return nil, nil
	}
	if c.IsSet("pin") && c.IsSet("ca") {
		return nil, Usagef("--pin and --ca are two ways to verify the server; choose one")
	}
	if c.IsSet("cert") != c.IsSet("cert-key") {
		return nil, Usagef("--cert and --cert-key go together")
	}
	o := tlsconf.Client{
		CAFile:     c.String("ca"),
		ServerName: c.String("server-name"),
		CertFile:   c.String("cert"),
		KeyFile:    c.String("cert-key"),
	}
	if f := c.String("pin"); f != "" {
		pub, err := identity.LoadPublicKey(f)
		if err != nil {
			return nil, fmt.Errorf("--pin: %w", err)
		}
		o.Pin = pub
	}
	return o.Config(addr)
}

// Key returns the private key to authenticate with: from --identity, from
// --credentials-fd, or nil when neither is given.
func Key(c *cli.Context) (ed25519.PrivateKey, error) {
	path, fd := c.String("identity"), c.Int("credentials-fd")
	switch {
	case path != "":
		// An explicit key file wins over the descriptor the pool names in
		// the environment: a custom worker may bring its own key.
		id, err := identity.Load(path)
		if err != nil {
			return nil, fmt.Errorf("--identity: %w", err)
		}
		return id.Private, nil
	case fd > 0 && fd < 3:
		return nil, Usagef("--credentials-fd %d is standard input, output or error; the key comes on a descriptor from 3 up", fd)
	case fd > 0:
		return readKeyFD(fd)
	}
	return nil, nil
}

// maxCredentials bounds what is read from the credentials descriptor.
const maxCredentials = 16 << 10

// readKeyFD reads a PEM private key from file descriptor fd and closes it.
func readKeyFD(fd int) (ed25519.PrivateKey, error) {
	f := os.NewFile(uintptr(fd), "credentials")
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCredentials+1))
	if err != nil {
		return nil, fmt.Errorf("credentials: read file descriptor %d (is it open? chattyd's pool passes it to workers of an authenticating signed listener): %w", fd, err)
	}
	if len(data) > maxCredentials {
		return nil, errors.New("credentials: more than " + strconv.Itoa(maxCredentials) + " bytes; not a key")
	}
	priv, err := identity.ParsePrivateKey(data)
	clear(data)
	if err != nil {
		return nil, fmt.Errorf("credentials from file descriptor %d: %w", fd, err)
	}
	return priv, nil
}
