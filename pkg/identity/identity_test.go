package identity

import (
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id.key")
	id, err := Generate(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("key mode %04o, want 0600", perm)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Private.Equal(id.Private) || !got.Public.Equal(id.Public) {
		t.Error("loaded key differs from the generated one")
	}
	pub, err := LoadPublicKey(PublicPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(id.Public) {
		t.Error("public key file holds another key")
	}
	if _, err := Generate(path); !errors.Is(err, ErrExists) {
		t.Errorf("second Generate: %v, want ErrExists", err)
	}
	again, err := Load(path)
	if err != nil || !again.Private.Equal(id.Private) {
		t.Errorf("key changed after a refused Generate: %v", err)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 2 {
		t.Errorf("directory holds %d entries, want the key and its .pub", len(ents))
	}
}

func TestLoadRefusesOpenMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id.key")
	if _, err := Generate(path); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if !errors.Is(err, ErrInsecureMode) {
			t.Fatalf("mode %04o: %v, want ErrInsecureMode", mode, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "chmod 600 "+path) {
			t.Errorf("mode %04o: error %q does not name the fix", mode, msg)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

func TestLoadOrGenerate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "identity.key")
	id, generated, err := LoadOrGenerate(path)
	if err != nil || !generated {
		t.Fatalf("first: generated=%v err=%v", generated, err)
	}
	st, err := os.Stat(filepath.Dir(path))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v %v", st.Mode(), err)
	}
	id2, generated, err := LoadOrGenerate(path)
	if err != nil || generated || !id2.Private.Equal(id.Private) {
		t.Fatalf("second: generated=%v err=%v", generated, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrGenerate(path); !errors.Is(err, ErrInsecureMode) {
		t.Errorf("open mode: %v, want ErrInsecureMode and no new key", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := Load(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	for name, data := range map[string]string{
		"empty":  "",
		"pubpem": string(MarshalPublicPEM(make(ed25519.PublicKey, 32))),
		"junk":   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	} {
		p := write(name, data)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
}

func TestPublicKeyForms(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	for name, data := range map[string][]byte{
		"pem":  MarshalPublicPEM(pub),
		"line": []byte(AuthorizedKeyLine(pub, "a comment")),
	} {
		got, err := ParsePublicKey(data)
		if err != nil || !got.Equal(pub) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if !strings.HasPrefix(AuthorizedKeyLine(pub, ""), "ssh-ed25519 AAAA") {
		t.Errorf("line %q", AuthorizedKeyLine(pub, ""))
	}
}

// TestFingerprintMatchesSSHKeygen checks the fingerprint against
// ssh-keygen's own, when it is installed.
func TestFingerprintMatchesSSHKeygen(t *testing.T) {
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Skip("ssh-keygen not installed")
	}
	path := filepath.Join(t.TempDir(), "id.key")
	id, err := Generate(path)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-l", "-E", "sha256", "-f", PublicPath(path)).Output()
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(out))
	if len(fields) < 2 || fields[1] != id.Fingerprint() {
		t.Errorf("ssh-keygen says %q, Fingerprint %q", out, id.Fingerprint())
	}
}

func TestFingerprintKnownKey(t *testing.T) {
	// The key of the all-zero seed; the value is what ssh-keygen -l -E sha256
	// prints for "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop".
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	if got, want := Fingerprint(pub), "SHA256:tAXFyTXI8xtDaujAEcwJslAYc9/6FKcUkd2Lw0xDhPo"; got != want {
		t.Errorf("Fingerprint = %q, want %q", got, want)
	}
	if got, want := AuthorizedKeyLine(pub, "c"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop c"; got != want {
		t.Errorf("AuthorizedKeyLine = %q, want %q", got, want)
	}
}
