package identity

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"
)

// AuthorizedKey is one client key of an authorized-keys file.
type AuthorizedKey struct {
	Key         ed25519.PublicKey
	Comment     string
	Line        int    // line number in the file, from 1
	Fingerprint string // as Fingerprint returns
}

// AuthorizedKeys is the set of client keys allowed to send signed messages.
// It is immutable once parsed and safe for concurrent use.
type AuthorizedKeys struct {
	keys map[[ed25519.PublicKeySize]byte]AuthorizedKey
}

// ParseAuthorizedKeys parses an authorized_keys file of ssh-ed25519 lines.
// Blank lines and lines starting with "#" are skipped. Every bad line is
// reported, each with its line number prefixed by name: keys of another
// type, lines with options (chatty would not enforce them), unparsable
// lines and duplicate keys.
func ParseAuthorizedKeys(name string, data []byte) (*AuthorizedKeys, error) {
	a := &AuthorizedKeys{keys: make(map[[ed25519.PublicKeySize]byte]AuthorizedKey)}
	var errs []error
	for n, line := range bytes.Split(data, []byte("\n")) {
		lineNo := n + 1
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, comment, options, rest, err := ssh.ParseAuthorizedKey(line)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s:%d: %w", name, lineNo, err))
			continue
		case len(bytes.TrimSpace(rest)) != 0:
			errs = append(errs, fmt.Errorf("%s:%d: trailing data after the key", name, lineNo))
			continue
		case len(options) != 0:
			errs = append(errs, fmt.Errorf("%s:%d: options %q are not supported; remove them", name, lineNo, options))
			continue
		}
		pub, err := ed25519Of(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", name, lineNo, err))
			continue
		}
		key := [ed25519.PublicKeySize]byte(pub)
		if prev, dup := a.keys[key]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: the same key as line %d", name, lineNo, prev.Line))
			continue
		}
		a.keys[key] = AuthorizedKey{Key: pub, Comment: comment, Line: lineNo, Fingerprint: ssh.FingerprintSHA256(k)}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

// LoadAuthorizedKeys reads and parses the authorized-keys file at path.
func LoadAuthorizedKeys(path string) (*AuthorizedKeys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read authorized keys: %w", err)
	}
	return ParseAuthorizedKeys(path, data)
}

// Lookup returns the entry for pub, and whether there is one.
func (a *AuthorizedKeys) Lookup(pub ed25519.PublicKey) (AuthorizedKey, bool) {
	if a == nil || len(pub) != ed25519.PublicKeySize {
		return AuthorizedKey{}, false
	}
	k, ok := a.keys[[ed25519.PublicKeySize]byte(pub)]
	return k, ok
}

// Contains reports whether pub is authorized. It makes *AuthorizedKeys a
// signed.KeySet.
func (a *AuthorizedKeys) Contains(pub ed25519.PublicKey) bool {
	_, ok := a.Lookup(pub)
	return ok
}

// Len returns the number of keys.
func (a *AuthorizedKeys) Len() int {
	if a == nil {
		return 0
	}
	return len(a.keys)
}
