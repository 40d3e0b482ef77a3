package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// ecdsaLine returns an authorized_keys line of another key type, which
// must be refused.
func ecdsaLine(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " ecdsa@example"
}

func TestParseAuthorizedKeys(t *testing.T) {
	a, _, _ := ed25519.GenerateKey(nil)
	b, _, _ := ed25519.GenerateKey(nil)
	data := "# clients\n\n" + AuthorizedKeyLine(a, "worker") + "\n  " + AuthorizedKeyLine(b, "") + "  \n"
	keys, err := ParseAuthorizedKeys("auth", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if keys.Len() != 2 {
		t.Fatalf("Len = %d", keys.Len())
	}
	k, ok := keys.Lookup(a)
	if !ok || k.Comment != "worker" || k.Line != 3 || k.Fingerprint != Fingerprint(a) {
		t.Errorf("Lookup(a) = %+v, %v", k, ok)
	}
	if !keys.Contains(b) {
		t.Error("b not contained")
	}
	c, _, _ := ed25519.GenerateKey(nil)
	if keys.Contains(c) || keys.Contains(c[:5]) {
		t.Error("unknown key contained")
	}
	var nilKeys *AuthorizedKeys
	if nilKeys.Contains(a) || nilKeys.Len() != 0 {
		t.Error("nil set contains a key")
	}
}

func TestParseAuthorizedKeysErrors(t *testing.T) {
	a, _, _ := ed25519.GenerateKey(nil)
	line := AuthorizedKeyLine(a, "ok")
	rsaLine := ecdsaLine(t)
	tests := []struct {
		name string
		data string
		want []string
	}{
		{"ecdsa", line + "\n" + rsaLine + "\n", []string{"f:2:", "ecdsa-sha2-nistp256 is not supported"}},
		{"garbage", "hello world\n", []string{"f:1:"}},
		{"options", `from="10.0.0.1" ` + line + "\n", []string{"f:1:", "options"}},
		{"duplicate", line + "\n" + line + "\n", []string{"f:2:", "line 1"}},
		{"every bad line", rsaLine + "\n" + line + "\nnope\n", []string{"f:1:", "f:3:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAuthorizedKeys("f", []byte(tt.data))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLoadAuthorizedKeys(t *testing.T) {
	a, _, _ := ed25519.GenerateKey(nil)
	rsaLine := ecdsaLine(t)
	path := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(path, []byte(rsaLine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAuthorizedKeys(path); err == nil || !strings.Contains(err.Error(), path+":1:") {
		t.Errorf("error %v does not name the file and line", err)
	}
	if err := os.WriteFile(path, []byte(AuthorizedKeyLine(a, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadAuthorizedKeys(path)
	if err != nil || !keys.Contains(a) {
		t.Errorf("load: %v", err)
	}
}
