package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
)

// Keyring is the set of client keys a daemon accepts: those of an
// authorized-keys file, replaced as a whole on reload, and keys the
// daemon issued itself (one per pool worker start), each accepted until
// it is revoked. Safe for concurrent use; it is a signed.KeySet.
type Keyring struct {
	file atomic.Pointer[AuthorizedKeys]

	mu     sync.RWMutex
	issued map[[ed25519.PublicKeySize]byte]struct{}
}

// NewKeyring returns a keyring that accepts the keys of file (nil for
// none) and no issued key yet.
func NewKeyring(file *AuthorizedKeys) *Keyring {
	k := &Keyring{issued: make(map[[ed25519.PublicKeySize]byte]struct{})}
	k.file.Store(file)
	return k
}

// SetFile replaces the keys of the authorized-keys file; nil removes them.
func (k *Keyring) SetFile(file *AuthorizedKeys) { k.file.Store(file) }

// File returns the authorized-keys file's keys in force, or nil.
func (k *Keyring) File() *AuthorizedKeys { return k.file.Load() }

// Issue creates a new key pair and accepts its public key until revoke is
// called (revoke may be called more than once).
func (k *Keyring) Issue() (priv ed25519.PrivateKey, revoke func(), err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue a client key: %w", err)
	}
	id := [ed25519.PublicKeySize]byte(pub)
	k.mu.Lock()
	k.issued[id] = struct{}{}
	k.mu.Unlock()
	return priv, func() {
		k.mu.Lock()
		delete(k.issued, id)
		k.mu.Unlock()
	}, nil
}

// Issued returns the number of issued keys not yet revoked.
func (k *Keyring) Issued() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.issued)
}

// Contains reports whether pub is accepted: in the file, or issued and not
// revoked.
func (k *Keyring) Contains(pub ed25519.PublicKey) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	if f := k.file.Load(); f != nil && f.Contains(pub) {
		return true
	}
	k.mu.RLock()
	_, ok := k.issued[[ed25519.PublicKeySize]byte(pub)]
	k.mu.RUnlock()
	return ok
}
