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

	mu sync.Mutex
	// Guarded by mu:
	entries map[sigKey]*sigEntry
	order   []sigKey // ring of the entries, oldest at next once full
	next    int
	stats   CacheStats
}

// sigKey is a public key, a digest and a signature, in that order.
type sigKey [sigOffset + ed25519.SignatureSize]byte

// sigOffset is where the signature starts in a sigKey.
const sigOffset = ed25519.PublicKeySize + len(Digest{})

// sigEntry is a triple's answer, or the promise of one. Each entry has
// its own channel rather than the cache one condition: a hundred readers
// waiting on different signatures would all wake at every answer.
type sigEntry struct {
	done    chan struct{} // closed once valid is set
	settled bool          // guarded by the cache's mu; set with valid
	valid   bool
}

// CacheStats are a SignatureCache's counters.
type CacheStats struct {
	Checks  uint64 // calls of ed25519.Verify
	Hits    uint64 // answers from an entry, including waits for one being verified
	Entries int    // entries held now
}

// NewSignatureCache returns a cache of at most size triples (at least 1).
// Each entry costs about 400 bytes.
func NewSignatureCache(size int) *SignatureCache {
	size = max(size, 1)
	return &SignatureCache{
		verify:  ed25519.Verify,
		entries: make(map[sigKey]*sigEntry, size),
		order:   make([]sigKey, 0, size),
	}
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
	e, ok := c.entries[k]
	if !ok {
		e = c.claimLocked(&k)
		c.mu.Unlock()
		c.settle(e, &k)
		return e.valid
	}
	c.stats.Hits++
	settled, valid := e.settled, e.valid
	c.mu.Unlock()
	if settled {
		return valid
	}
	<-e.done
	return e.valid
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
	if _, ok := c.entries[k]; ok {
		c.mu.Unlock()
		return
	}
	e := c.claimLocked(&k)
	c.mu.Unlock()
	c.settle(e, &k)
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

// claimLocked adds an entry for k, to be settled by the caller, evicting
// the oldest entry when the cache is full. Callers waiting for an evicted
// entry still get its answer.
func (c *SignatureCache) claimLocked(k *sigKey) *sigEntry {
	if len(c.order) < cap(c.order) {
		c.order = append(c.order, *k)
	} else {
		delete(c.entries, c.order[c.next])
		c.order[c.next] = *k
		c.next = (c.next + 1) % len(c.order)
	}
	e := &sigEntry{done: make(chan struct{})}
	c.entries[*k] = e
	c.stats.Checks++
	return e
}

// settle verifies k, without holding mu, and answers e's waiters.
func (c *SignatureCache) settle(e *sigEntry, k *sigKey) {
	// A copy on the heap, so that the caller's key and digest, which
	// c.verify might keep as far as the compiler knows, stay on the stack.
	t := new(sigKey)
	*t = *k
	valid := c.verify(t[:ed25519.PublicKeySize], t[ed25519.PublicKeySize:sigOffset], t[sigOffset:])
	c.mu.Lock()
	e.valid, e.settled = valid, true
	c.mu.Unlock()
	close(e.done)
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
