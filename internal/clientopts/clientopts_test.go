package clientopts

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/chatty-dev/chatty/internal/pool"
	"github.com/chatty-dev/chatty/pkg/identity"
)

// parsed is what TLS and Key made of some flags.
type parsed struct {
	tlsErr, keyErr error
	key            ed25519.PrivateKey
	tlsOn          bool
}

// parse runs args through the flags.
func parse(t *testing.T, args ...string) (p parsed) {
	t.Helper()
	app := &cli.App{Flags: Flags(), Action: func(c *cli.Context) error {
		cfg, err := TLS(c, "127.0.0.1:1")
		p.tlsErr, p.tlsOn = err, cfg != nil
		p.key, p.keyErr = Key(c)
		return nil
	}}
	if err := app.Run(append([]string{"x"}, args...)); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlags(t *testing.T) {
	if CredentialsFDEnv != pool.CredentialsFDEnv {
		t.Fatalf("%s here, %s in the pool", CredentialsFDEnv, pool.CredentialsFDEnv)
	}
	t.Setenv(CredentialsFDEnv, "")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "client.key")
	id, err := identity.Generate(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	usage := []struct {
		args []string
		want string
	}{
		{[]string{"--pin", "x.pub"}, "--pin is for --tls"},
		{[]string{"--tls", "--pin", "x.pub", "--ca", "ca.pem"}, "choose one"},
		{[]string{"--tls", "--cert", "c.pem"}, "go together"},
	}
	for _, u := range usage {
		tlsErr := parse(t, u.args...).tlsErr
		var ue *UsageError
		if !errors.As(tlsErr, &ue) || !strings.Contains(tlsErr.Error(), u.want) {
			t.Errorf("%v: %v, want a usage error with %q", u.args, tlsErr, u.want)
		}
	}
	if p := parse(t, "--tls", "--pin", identity.PublicPath(keyFile)); p.tlsErr != nil || !p.tlsOn {
		t.Errorf("--tls --pin: %v", p.tlsErr)
	}
	if p := parse(t, "--tls", "--pin", filepath.Join(dir, "missing.pub")); p.tlsErr == nil || !strings.Contains(p.tlsErr.Error(), "missing.pub") {
		t.Errorf("a missing pin file: %v", p.tlsErr)
	}
	if p := parse(t, "--identity", keyFile); p.keyErr != nil || !p.key.Equal(id.Private) {
		t.Errorf("--identity: %v", p.keyErr)
	}
	if p := parse(t, "--credentials-fd", "1"); p.keyErr == nil || !strings.Contains(p.keyErr.Error(), "from 3 up") {
		t.Errorf("--credentials-fd 1: %v, want a usage error", p.keyErr)
	}
	// A custom worker's own --identity wins over the pool's descriptor.
	t.Setenv(CredentialsFDEnv, "99")
	if p := parse(t, "--identity", keyFile); p.keyErr != nil || !p.key.Equal(id.Private) {
		t.Errorf("--identity with %s set: %v", CredentialsFDEnv, p.keyErr)
	}
}

// A key passed through a pipe, as the pool does, is read and the
// descriptor closed; garbage is refused with an error that says so.
func TestCredentialsFD(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	pem, err := identity.MarshalPrivatePEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"key", pem, ""},
		{"garbage", []byte("not a key"), "credentials from file descriptor"},
		{"too long", make([]byte, maxCredentials+10), "not a key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			go func() { w.Write(tc.data); w.Close() }()
			// A descriptor of its own, as a worker inherits it; r keeps
			// (and closes) the original.
			fd, err := syscall.Dup(int(r.Fd()))
			r.Close()
			if err != nil {
				t.Fatal(err)
			}
			got, err := readKeyFD(fd)
			if tc.wantErr == "" {
				if err != nil || !got.Equal(priv) {
					t.Fatalf("readKeyFD: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("readKeyFD = %v, want an error with %q", err, tc.wantErr)
			}
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
				t.Error("the descriptor was left open")
			}
		})
	}
}
