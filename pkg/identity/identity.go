// Package identity manages chatty's Ed25519 identities: the daemon's key
// pair, kept as a PKCS#8 PEM private key file of mode 0600 with its public
// key beside it, and the authorized-keys file that lists the client keys
// allowed to send signed messages upstream.
//
// Public keys are shown in two forms: a PEM "PUBLIC KEY" block
// (SubjectPublicKeyInfo) and an OpenSSH authorized_keys line
// ("ssh-ed25519 AAAA... comment"). ParsePublicKey reads either. Keys are
// named by their OpenSSH SHA256 fingerprint.
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Identity is an Ed25519 key pair loaded from, or written to, Path.
type Identity struct {
	Path    string
	Private ed25519.PrivateKey
	Public  ed25519.PublicKey
}

// Fingerprint returns the identity's public key fingerprint.
func (id *Identity) Fingerprint() string { return Fingerprint(id.Public) }

// PublicPath returns the path of the public key file written beside a
// private key file: path + ".pub".
func PublicPath(path string) string { return path + ".pub" }

// ErrExists is wrapped by Generate's error when the key file is already there.
var ErrExists = errors.New("identity key file already exists")

// ErrInsecureMode is wrapped by Load's error for a key file that group or
// others may read or write.
var ErrInsecureMode = errors.New("identity key file is accessible by group or others")

// Generate creates a new key pair: the private key at path (PKCS#8 PEM,
// mode 0600) and the public key as an authorized_keys line at
// PublicPath(path) (mode 0644). It refuses to overwrite an existing private
// key; the private key file appears complete or not at all.
func Generate(path string) (*Identity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	data, err := MarshalPrivatePEM(priv)
	if err != nil {
		return nil, err
	}
	if err := writeExclusive(path, data); err != nil {
		return nil, err
	}
	line := AuthorizedKeyLine(pub, "chatty "+filepath.Base(path))
	if err := writeReplace(PublicPath(path), []byte(line+"\n"), 0o644); err != nil {
		return nil, err
	}
	return &Identity{Path: path, Private: priv, Public: pub}, nil
}

// writeExclusive writes data to a temporary file beside path and links it
// to path, which fails if path exists: no partial key is ever visible and
// an existing one is never replaced.
func writeExclusive(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("create identity key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("create identity key %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write identity key %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write identity key %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write identity key %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s; refusing to overwrite it (move it away to make a new one)", ErrExists, path)
		}
		return fmt.Errorf("create identity key %s: %w", path, err)
	}
	return nil
}

// writeReplace writes data to path through a temporary file and a rename.
func writeReplace(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write public key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write public key %s: %w", path, err)
	}
	return nil
}

// Load reads the private key at path. It refuses a file that group or
// others may access, naming the file and the fix, and a key that is not
// Ed25519.
func Load(path string) (*Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open identity key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open identity key: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrInsecureMode, path, perm, path)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("identity key %s is not a regular file", path)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("read identity key %s: %w", path, err)
	}
	priv, err := ParsePrivateKey(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	return &Identity{Path: path, Private: priv, Public: priv.Public().(ed25519.PublicKey)}, nil
}

// LoadOrGenerate loads the key at path, or generates it (creating its
// directory with mode 0700) when there is none yet. It reports whether it
// generated the key.
func LoadOrGenerate(path string) (id *Identity, generated bool, err error) {
	id, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return id, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create identity key directory: %w", err)
	}
	id, err = Generate(path)
	if errors.Is(err, ErrExists) {
		// Another process made it between our two steps: use theirs.
		id, err = Load(path)
		return id, false, err
	}
	return id, err == nil, err
}

// ParsePrivateKey parses a PEM "PRIVATE KEY" block holding a PKCS#8
// Ed25519 key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found; want a PKCS#8 \"PRIVATE KEY\"")
	}
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("PEM block is %q; want a PKCS#8 \"PRIVATE KEY\"", block.Type)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8 key: %w", err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is a %T; want Ed25519", key)
	}
	return priv, nil
}

// MarshalPrivatePEM returns priv as a PEM "PRIVATE KEY" block (PKCS#8),
// the form ParsePrivateKey reads.
func MarshalPrivatePEM(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicPEM returns pub as a PEM "PUBLIC KEY" block (SPKI).
func MarshalPublicPEM(pub ed25519.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic("identity: marshal Ed25519 public key: " + err.Error()) // cannot fail for a 32-byte key
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// AuthorizedKeyLine returns pub as an authorized_keys line without a
// terminator: "ssh-ed25519 AAAA... comment".
func AuthorizedKeyLine(pub ed25519.PublicKey, comment string) string {
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(sshKey(pub))), "\n")
	if comment != "" {
		line += " " + comment
	}
	return line
}

// Fingerprint returns pub's OpenSSH fingerprint, "SHA256:" and the
// unpadded base64 SHA-256 of its SSH wire encoding, as ssh-keygen -l shows.
func Fingerprint(pub ed25519.PublicKey) string {
	return ssh.FingerprintSHA256(sshKey(pub))
}

func sshKey(pub ed25519.PublicKey) ssh.PublicKey {
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic("identity: not an Ed25519 public key: " + err.Error())
	}
	return k
}

// ParsePublicKey parses an Ed25519 public key given as a PEM "PUBLIC KEY"
// block or as an authorized_keys line (the content of a .pub file).
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("PEM block is %q; want \"PUBLIC KEY\"", block.Type)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		pub, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key is a %T; want Ed25519", key)
		}
		return pub, nil
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, fmt.Errorf("parse public key (want PEM or an ssh-ed25519 line): %w", err)
	}
	return ed25519Of(k)
}

// LoadPublicKey reads a public key file in either form of ParsePublicKey.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	pub, err := ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return pub, nil
}

func ed25519Of(k ssh.PublicKey) (ed25519.PublicKey, error) {
	if k.Type() != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("key type %s is not supported; want %s", k.Type(), ssh.KeyAlgoED25519)
	}
	ck, ok := k.(ssh.CryptoPublicKey)
	if !ok {
		return nil, fmt.Errorf("key type %s is not supported; want %s", k.Type(), ssh.KeyAlgoED25519)
	}
	pub, ok := ck.CryptoPublicKey().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key type %s is not supported; want %s", k.Type(), ssh.KeyAlgoED25519)
	}
	return pub, nil
}
