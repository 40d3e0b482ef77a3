package integration

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/test/harness"
)

// keygenKey runs chattyd keygen into a fresh directory and returns the
// private key's path and the public key read from the .pub beside it.
func keygenKey(t *testing.T) (string, identity.Identity) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "identity.key")
	r := harness.Run(t, short, "keygen", "--out", path)
	if r.Code != 0 {
		t.Fatalf("chattyd keygen exited %d: %s", r.Code, r.Stderr)
	}
	pub, err := identity.LoadPublicKey(identity.PublicPath(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{identity.PublicPath(path), identity.Fingerprint(pub)} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("keygen's output lacks %q:\n%s", want, r.Stdout)
		}
	}
	return path, identity.Identity{Path: path, Public: pub}
}

// chattyd keygen makes a private key only its owner may read and a .pub
// file beside it, says where and with which fingerprint, and will not
// overwrite a key.
func TestKeygen(t *testing.T) {
	t.Parallel()
	path, id := keygenKey(t)
	r := harness.Run(t, short, "keygen", "--out", path)
	if r.Code != 1 || !strings.Contains(r.Stderr, path) {
		t.Errorf("keygen over an existing key exited %d: %s", r.Code, r.Stderr)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key: %v, %v; want mode 0600", st, err)
	}
	loaded, err := identity.Load(path)
	if err != nil || !loaded.Public.Equal(id.Public) {
		t.Fatalf("load %s: %v; want the key of its .pub", path, err)
	}
}

// chattyd refuses to start with a key others may read, naming the file
// and the fix.
func TestIdentityKeyMode(t *testing.T) {
	t.Parallel()
	path, _ := keygenKey(t)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "chattyd.yaml", config("identity:\n  key_file: "+path+"\n"))
	r := harness.Run(t, short, "--config", cfg, "--listen", "127.0.0.1:0", "--control-socket", harness.SocketDir(t)+"/c.sock")
	if r.Code != 1 || !strings.Contains(r.Stderr, path) || !strings.Contains(r.Stderr, "chmod 600") {
		t.Errorf("exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
}

// chattyctl identity shows the key chattyd loaded: its fingerprint is the
// one of the .pub file keygen wrote, and the daemon logs it at start.
func TestIdentityShown(t *testing.T) {
	t.Parallel()
	path, id := keygenKey(t)
	fp := id.Fingerprint()
	d := harness.StartDaemon(t, harness.Options{Config: config("identity:\n  key_file: " + path + "\n")})
	d.WaitLog(t, fp, short)
	ctl := harness.BuildBinaries(t).Chattyctl

	out, err := exec.Command(ctl, "--socket", d.ControlSocket(), "identity").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fingerprint: "+fp+"\n") {
		t.Fatalf("chattyctl identity: %v\n%s", err, out)
	}
	out, err = exec.Command(ctl, "--socket", d.ControlSocket(), "identity", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var got control.Identity
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	pub, err := identity.ParsePublicKey([]byte(got.PublicKey))
	if err != nil || !pub.Equal(id.Public) || got.Fingerprint != fp {
		t.Errorf("identity --json = %+v (%v); want the key of %s", got, err, identity.PublicPath(path))
	}
}

// generate: true makes the key at first start and reuses it after.
func TestIdentityGenerated(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state", "identity.key")
	cfg := config("identity:\n  key_file: " + path + "\n  generate: true\n")
	d := harness.StartDaemon(t, harness.Options{Config: cfg})
	d.WaitLog(t, "Generated a new identity key", short)
	pub, err := identity.LoadPublicKey(identity.PublicPath(path))
	if err != nil {
		t.Fatal(err)
	}
	d.WaitLog(t, identity.Fingerprint(pub), short)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("generated key: %v, %v; want mode 0600", st, err)
	}
}

// Without an identity, chattyctl identity fails and says so.
func TestNoIdentity(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: config("")})
	out, err := exec.Command(harness.BuildBinaries(t).Chattyctl, "--socket", d.ControlSocket(), "identity").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "no identity configured") {
		t.Errorf("chattyctl identity: %v\n%s", err, out)
	}
}
