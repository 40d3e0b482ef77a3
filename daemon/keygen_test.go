package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/chatty-dev/chatty/internal/daemon"
)

func runChattyd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"chattyd"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// keygen writes a 0600 key and its .pub, prints where and the
// fingerprint, and refuses to overwrite the key on a second run.
func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id.key")
	code, out, errOut := runChattyd(t, "keygen", "--out", path)
	if code != 0 {
		t.Fatalf("keygen exited %d: %s", code, errOut)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", st, err)
	}
	pub, err := identity.LoadPublicKey(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{path + ".pub", identity.Fingerprint(pub)} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	key, _ := os.ReadFile(path)

	code, _, errOut = runChattyd(t, "keygen", "--out", path)
	if code != 1 || !strings.Contains(errOut, path) || !strings.Contains(errOut, "refusing to overwrite") {
		t.Errorf("second keygen exited %d: %s; want 1 naming the file", code, errOut)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, key) {
		t.Error("the second keygen changed the key")
	}
}

// keygen makes a missing directory for the key, private, and says so; an
// existing one it leaves as it is.
func TestKeygenMakesTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "chattyd")
	path := filepath.Join(dir, "identity.key")
	code, out, errOut := runChattyd(t, "keygen", "--out", path)
	if code != 0 {
		t.Fatalf("keygen exited %d: %s", code, errOut)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v, %v; want mode 0700", st, err)
	}
	if !strings.Contains(out, "created directory "+dir) || !strings.Contains(out, path) {
		t.Errorf("output does not say what was made:\n%s", out)
	}
	code, out, _ = runChattyd(t, "keygen", "--out", filepath.Join(dir, "second.key"))
	if code != 0 || strings.Contains(out, "created directory") {
		t.Errorf("keygen into an existing directory exited %d and said %q", code, out)
	}
}

// The daemon refuses a key that others may read, naming the file and the
// fix, and fails on a missing key unless identity.generate is set.
func TestDaemonIdentityKeyChecks(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose.key")
	if _, err := identity.Generate(loose); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.key")
	for _, tc := range []struct {
		name string
		id   config.Identity
		want []string
	}{
		{"mode 0644", config.Identity{KeyFile: loose}, []string{loose, "chmod 600"}},
		{"mode 0644 with generate", config.Identity{KeyFile: loose, Generate: true}, []string{loose, "chmod 600"}},
		{"missing", config.Identity{KeyFile: missing}, []string{missing, "chattyd keygen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Identity = tc.id
			logger, _ := test.NewNullLogger()
			_, err := daemon.New(daemon.Options{Config: cfg, Logger: logger})
			if err == nil {
				t.Fatal("daemon.New accepted the key")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// chattyd worker --signed needs the daemon's public key, and --pubkey
// makes sense only with --signed.
func TestWorkerSignedFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"signed without pubkey", []string{"--signed"}, 2, "--signed needs --pubkey"},
		{"pubkey without signed", []string{"--pubkey", "x.pub"}, 2, "--pubkey is for --signed"},
		{"missing pubkey file", []string{"--signed", "--pubkey", "/nonexistent/x.pub"}, 1, "/nonexistent/x.pub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runChattyd(t, append([]string{"worker", "--addr", "127.0.0.1:1"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d with %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}
