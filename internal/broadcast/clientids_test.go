package broadcast

import (
	"crypto/ed25519"
	"testing"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// A text server and a signed server sharing ClientIDs never give two
// clients the same id.
func TestSharedClientIDs(t *testing.T) {
	ids := new(ClientIDs)
	textLn, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	text := New(textLn, testLimits(), logging.Discard())
	text.SetClientIDs(ids)
	runServer(t, text)
	// The text server's goroutines are all up before runServer counts
	// them for the next one.
	dial(t, text)

	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	signedLn, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sig, err := NewSigned(signedLn, testLimits(), SignedOptions{Key: priv, Mode: signed.PerMessage}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	sig.SetClientIDs(ids)
	runServer(t, sig)
	dialSigned(t, sig, pub)
	dial(t, text)

	seen := map[uint64]string{}
	for name, srv := range map[string]*Server{"text": text, "signed": sig} {
		for _, c := range srv.Clients() {
			if other, dup := seen[c.ID]; dup {
				t.Errorf("id %d is a %s client's and a %s client's", c.ID, other, name)
			}
			seen[c.ID] = name
		}
	}
	if len(seen) != 3 {
		t.Errorf("clients by id %v; want 3 clients with ids of their own", seen)
	}
}
