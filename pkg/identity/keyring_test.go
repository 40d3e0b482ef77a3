package identity

import (
	"crypto/ed25519"
	"sync"
	"testing"
)

func TestKeyring(t *testing.T) {
	filePub, _, _ := ed25519.GenerateKey(nil)
	other, _, _ := ed25519.GenerateKey(nil)
	file, err := ParseAuthorizedKeys("clients", []byte(AuthorizedKeyLine(filePub, "ops")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	k := NewKeyring(file)
	if !k.Contains(filePub) || k.Contains(other) || k.Contains(ed25519.PublicKey{1}) {
		t.Fatal("the keyring must accept exactly the file's keys")
	}

	priv, revoke, err := k.Issue()
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	if !k.Contains(pub) || k.Issued() != 1 {
		t.Fatal("an issued key is not accepted")
	}
	revoke()
	revoke()
	if k.Contains(pub) || k.Issued() != 0 {
		t.Fatal("a revoked key is still accepted")
	}

	// A reload replaces the file's keys and leaves issued ones alone.
	priv2, revoke2, _ := k.Issue()
	defer revoke2()
	k.SetFile(nil)
	if k.Contains(filePub) {
		t.Fatal("a key removed from the file is still accepted")
	}
	if !k.Contains(priv2.Public().(ed25519.PublicKey)) {
		t.Fatal("a reload dropped an issued key")
	}
}

func TestKeyringConcurrent(t *testing.T) {
	k := NewKeyring(nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				priv, revoke, err := k.Issue()
				if err != nil {
					t.Error(err)
					return
				}
				if !k.Contains(priv.Public().(ed25519.PublicKey)) {
					t.Error("issued key not accepted")
				}
				revoke()
			}
		})
	}
	wg.Wait()
	if k.Issued() != 0 {
		t.Fatalf("%d keys left after every revoke", k.Issued())
	}
}
