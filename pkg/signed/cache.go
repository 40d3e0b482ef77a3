package signed

import (
	"crypto/ed25519"
	"sync"
)

// SignatureCache remembers the Ed25519 signatures already checked, so that
// many Verifiers in one process that read the same stream (every client of
// a daemon receives the same signed frames) check each signature once.
// Pass it as VerifierOptions.Cache; it is safe for concurrent use.
//
// An entry is a whole (public key, digest, signature) triple and the
// result ed25519.Verify gave for it. Verification is a deterministic
// function of those three, so answering a repeated triple from the cache
// is exactly as strong as verifying it again. Each Verifier still
// recomputes the digest from the bytes it received and compares it before
// asking, so a frame altered in transit never meets a cached answer.
//
// When several goroutines ask about the same triple at once, one verifies
// it and the others wait for its answer. The cache holds at most the
// number of entries given to NewSignatureCache and forgets the oldest
// first; a forgotten triple is simply verified again.
type SignatureCache struct {
	// verify is ed25519.Verify; tests count the calls.
	verify func(pub ed25519.PublicKey, msg, sig []byte) bool

	mu      sync.Mutex
	settled *sync.Cond // signalled on mu when an entry's verification ends
	// Guarded by mu:
	entries map[sigKey]sigState
	order   []sigKey // ring of the entries, oldest at next once full
	next    int
	stats   CacheStats
}

// sigKey is a public key, a digest and a signature, in that order.
type sigKey [sigOffset + ed25519.SignatureSize]byte

// sigOffset is where the signature starts in a sigKey.
const sigOffset = ed25519.PublicKeySize + len(Digest{})

type sigState uint8

const (
	sigPending sigState = iota // being verified by one caller
	sigValid
	sigInvalid
)

// CacheStats are a SignatureCache's counters.
type CacheStats struct {
	Checks  uint64 // calls of ed25519.Verify
	Hits    uint64 // answers from an entry, including waits for one being verified
	Entries int    // entries held now
}

// NewSignatureCache returns a cache of at most size triples (at least 1).
// Each entry costs about 300 bytes.
func NewSignatureCache(size int) *SignatureCache {
	size = max(size, 1)
	c := &SignatureCache{
		verify:  ed25519.Verify,
		entries: make(map[sigKey]sigState, size),
		order:   make([]sigKey, 0, size),
	}
	c.settled = sync.NewCond(&c.mu)
	return c
}

// Verify reports whether sig is pub's valid Ed25519 signature of digest,
// as ed25519.Verify does, answering from the cache when it can. A key,
// digest or signature of the wrong size is reported invalid and not
// cached.
func (c *SignatureCache) Verify(pub ed25519.PublicKey, digest, sig []byte) bool {
	k, ok := makeSigKey(pub, digest, sig)
	if !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		st, ok := c.entries[k]
		switch {
		case !ok:
			return c.verifyLocked(&k)
		case st == sigPending:
			c.settled.Wait()
		default:
			c.stats.Hits++
			return st == sigValid
		}
	}
}

// Prefetch verifies a triple and caches the answer, unless the cache
// holds it or another caller is verifying it: it never waits. Goroutines
// that prefetch the signatures of the frames they are about to verify
// share the checks out among themselves instead of all waiting on the
// first. What the frames' digests are is checked later, by the Verifier.
func (c *SignatureCache) Prefetch(pub ed25519.PublicKey, digest, sig []byte) {
	k, ok := makeSigKey(pub, digest, sig)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok {
		c.verifyLocked(&k)
	}
}

// makeSigKey returns the key of a triple, and false when a part has the
// wrong size.
func makeSigKey(pub ed25519.PublicKey, digest, sig []byte) (k sigKey, ok bool) {
	if len(pub) != ed25519.PublicKeySize || len(digest) != len(Digest{}) || len(sig) != ed25519.SignatureSize {
		return k, false
	}
	copy(k[:], pub)
	copy(k[ed25519.PublicKeySize:], digest)
	copy(k[sigOffset:], sig)
	return k, true
}

// verifyLocked verifies a triple not in the cache, without holding mu
// meanwhile, and records the answer.
func (c *SignatureCache) verifyLocked(k *sigKey) bool {
	c.insertLocked(k)
	c.stats.Checks++
	c.mu.Unlock()
	// A copy on the heap, so that the caller's key and digest, which
	// c.verify might keep as far as the compiler knows, stay on the stack.
	t := new(sigKey)
	*t = *k
	valid := c.verify(t[:ed25519.PublicKeySize], t[ed25519.PublicKeySize:sigOffset], t[sigOffset:])
	c.mu.Lock()
	st := sigInvalid
	if valid {
		st = sigValid
	}
	// The entry may have been evicted while mu was free; callers waiting
	// for it then verify it themselves.
	if _, ok := c.entries[*k]; ok {
		c.entries[*k] = st
	}
	c.settled.Broadcast()
	return valid
}

// insertLocked adds k as pending, evicting the oldest entry when full.
func (c *SignatureCache) insertLocked(k *sigKey) {
	if len(c.order) < cap(c.order) {
		c.order = append(c.order, *k)
	} else {
		delete(c.entries, c.order[c.next])
		c.order[c.next] = *k
		c.next = (c.next + 1) % len(c.order)
	}
	c.entries[*k] = sigPending
}

// Stats returns the counters.
func (c *SignatureCache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Entries = len(c.entries)
	return s
}

// checkSignature reports whether sig is the daemon's signature of d: the
// one place a Verifier checks signatures, through its cache if it has one.
func (v *Verifier) checkSignature(d *Digest, sig []byte) bool {
	if v.cache != nil {
		return v.cache.Verify(v.pub, d[:], sig)
	}
	return ed25519.Verify(v.pub, d[:], sig)
}
