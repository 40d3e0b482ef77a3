package signed

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

// countingCache returns a cache of size entries whose ed25519.Verify calls
// are counted.
func countingCache(size int) (*SignatureCache, *atomic.Int64) {
	c := NewSignatureCache(size)
	var calls atomic.Int64
	c.verify = func(pub ed25519.PublicKey, msg, sig []byte) bool {
		calls.Add(1)
		return ed25519.Verify(pub, msg, sig)
	}
	return c, &calls
}

// signedDigest is a digest and the test key's signature of it.
func signedDigest(i int) (Digest, []byte) {
	d := sum(fmt.Appendf(nil, "digest %d", i))
	return d, ed25519.Sign(testKey(), d[:])
}

var testPub = testKey().Public().(ed25519.PublicKey)

func TestSignatureCacheAnswersRepeats(t *testing.T) {
	c, calls := countingCache(16)
	d, sig := signedDigest(1)
	for i := range 3 {
		if !c.Verify(testPub, d[:], sig) {
			t.Fatalf("call %d: a valid signature rejected", i)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("ed25519.Verify called %d times for one triple asked 3 times, want 1", n)
	}
	if st := c.Stats(); st.Checks != 1 || st.Hits != 2 || st.Entries != 1 {
		t.Fatalf("stats %+v, want 1 check, 2 hits, 1 entry", st)
	}
}

// A triple that differs from a cached one in any part is verified for
// real, and a wrong one is rejected however often it is asked.
func TestSignatureCacheVerifiesEveryOtherTriple(t *testing.T) {
	d1, sig1 := signedDigest(1)
	d2, _ := signedDigest(2)
	otherPub, otherPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	otherSig := ed25519.Sign(otherPriv, d1[:])
	flipped := append([]byte(nil), sig1...)
	flipped[10] ^= 1
	tests := []struct {
		name   string
		pub    ed25519.PublicKey
		digest []byte
		sig    []byte
		valid  bool
		checks int64 // ed25519.Verify calls, asked twice
	}{
		{"other digest, same signature", testPub, d2[:], sig1, false, 1},
		{"flipped signature", testPub, d1[:], flipped, false, 1},
		{"other key, same digest and signature", otherPub, d1[:], sig1, false, 1},
		{"other key's valid signature", otherPub, d1[:], otherSig, true, 1},
		{"short signature", testPub, d1[:], sig1[:63], false, 0},
		{"short digest", testPub, d1[:31], sig1, false, 0},
		{"short key", testPub[:31], d1[:], sig1, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, calls := countingCache(16)
			if !c.Verify(testPub, d1[:], sig1) {
				t.Fatal("the valid triple was rejected")
			}
			for i := range 2 {
				if got := c.Verify(tc.pub, tc.digest, tc.sig); got != tc.valid {
					t.Fatalf("ask %d: Verify = %v, want %v", i, got, tc.valid)
				}
			}
			if got := calls.Load() - 1; got != tc.checks {
				t.Fatalf("ed25519.Verify called %d times for the other triple, want %d", got, tc.checks)
			}
		})
	}
}

// Prefetch verifies a triple once, for whoever asks next, and a bad one
// is still rejected.
func TestSignatureCachePrefetch(t *testing.T) {
	c, calls := countingCache(16)
	d, sig := signedDigest(1)
	bad, _ := signedDigest(2)
	for range 2 {
		c.Prefetch(testPub, d[:], sig)
		c.Prefetch(testPub, bad[:], sig)
		c.Prefetch(testPub, d[:], sig[:10]) // wrong size: ignored
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("ed25519.Verify called %d times for 2 triples prefetched twice, want 2", n)
	}
	if !c.Verify(testPub, d[:], sig) || c.Verify(testPub, bad[:], sig) {
		t.Fatal("a prefetched answer is wrong")
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("ed25519.Verify called again (%d calls) for prefetched triples", n)
	}
}

func TestSignatureCacheBound(t *testing.T) {
	const size = 8
	c, calls := countingCache(size)
	for i := range 3 * size {
		d, sig := signedDigest(i)
		if !c.Verify(testPub, d[:], sig) {
			t.Fatalf("triple %d rejected", i)
		}
		if n := c.Stats().Entries; n > size {
			t.Fatalf("after %d triples the cache holds %d, more than %d", i+1, n, size)
		}
	}
	// The newest are still there; the oldest were forgotten and are
	// verified again.
	d, sig := signedDigest(3*size - 1)
	c.Verify(testPub, d[:], sig)
	if n := calls.Load(); n != 3*size {
		t.Fatalf("the newest triple was verified again (%d calls)", n)
	}
	d, sig = signedDigest(0)
	c.Verify(testPub, d[:], sig)
	if n := calls.Load(); n != 3*size+1 {
		t.Fatalf("the oldest triple was not verified again (%d calls)", n)
	}
}

// Many goroutines asking about the same triples at once, half of them
// prefetching the next, get the right answers, and each triple is
// verified once when the cache holds them all.
// A cache too small for them forgets entries while others wait for them,
// and still answers right.
func TestSignatureCacheConcurrent(t *testing.T) {
	const triples, workers = 40, 16
	digests := make([]Digest, triples)
	sigs := make([][]byte, triples)
	for i := range triples {
		digests[i], sigs[i] = signedDigest(i)
	}
	for i := 0; i < triples; i += 4 {
		sigs[i] = sigs[i+1] // another digest's signature: invalid
	}
	for _, size := range []int{triples, 3} {
		t.Run(fmt.Sprintf("size %d", size), func(t *testing.T) {
			c, calls := countingCache(size)
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					for j := range triples {
						i := (j + w) % triples
						if w%2 == 0 {
							c.Prefetch(testPub, digests[(i+1)%triples][:], sigs[(i+1)%triples])
						}
						if got, want := c.Verify(testPub, digests[i][:], sigs[i]), i%4 != 0; got != want {
							errs <- fmt.Errorf("worker %d, triple %d: Verify = %v, want %v", w, i, got, want)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			st := c.Stats()
			if st.Hits+st.Checks < triples*workers || st.Entries > size || int64(st.Checks) != calls.Load() {
				t.Fatalf("stats %+v after %d answers, %d calls", st, triples*workers, calls.Load())
			}
			if size == triples && calls.Load() != triples {
				t.Fatalf("ed25519.Verify called %d times for %d triples", calls.Load(), triples)
			}
		})
	}
}

// sharedStreams encodes n messages once and returns the stream each of
// k connections receives: its own anchor, then the same message frames.
func sharedStreams(t *testing.T, mode Mode, n, k int) [][]byte {
	t.Helper()
	e := newTestEncoder(t, mode, 5)
	var anchors [][]byte
	for range k {
		a, _, err := e.Anchor(nil)
		if err != nil {
			t.Fatal(err)
		}
		anchors = append(anchors, a)
	}
	var msgs []byte
	for i := range n {
		var err error
		msgs, _, err = e.Append(msgs, message.Info, testNow.Add(time.Duration(i)*time.Millisecond), fmt.Appendf(nil, "line %d", i))
		if err != nil {
			t.Fatal(err)
		}
	}
	msgs = e.Checkpoint(msgs)
	out := make([][]byte, k)
	for i, a := range anchors {
		out[i] = append(a, msgs...)
	}
	return out
}

// feedAll verifies stream with a new Verifier of pub using cache and
// returns the messages delivered and the first rejection.
func feedAll(t *testing.T, pub ed25519.PublicKey, cache *SignatureCache, stream []byte) (int, error) {
	t.Helper()
	v, err := NewVerifier(pub, VerifierOptions{Now: fixedNow, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := v.Feed(stream, func(*Message) { n++ }); err != nil {
		return n, err
	}
	return n, v.Close()
}

// Verifiers sharing a cache check each shared signature once and still
// reject a frame whose signature is not the one checked.
func TestVerifierSharedCache(t *testing.T) {
	const n = 20
	for _, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			streams := sharedStreams(t, tc.mode, n, 3)
			c, calls := countingCache(1000)
			for i, s := range streams[:2] {
				if got, err := feedAll(t, testPub, c, s); err != nil || got != n {
					t.Fatalf("connection %d: %d of %d delivered, %v", i, got, n, err)
				}
			}
			shared := n // per-message: every message; chained: a checkpoint every 5
			if tc.mode == Chained {
				shared = n / 5
			}
			if got, want := calls.Load(), int64(2+shared); got != want { // plus the two anchors
				t.Fatalf("ed25519.Verify called %d times for 2 connections, want %d", got, want)
			}

			// The third connection gets the last signed frame's signature
			// replaced by the one before's: that triple was never checked.
			tampered := swapLastSignatures(t, streams[2])
			got, err := feedAll(t, testPub, c, tampered)
			var re *RejectError
			if !errors.As(err, &re) || re.Reason != ReasonBadSignature {
				t.Fatalf("tampered stream: %v after %d messages, want bad_signature", err, got)
			}
			if got >= n {
				t.Fatalf("delivered all %d messages of a tampered stream", got)
			}

			// Another key never borrows this key's answers.
			otherPub, _, _ := ed25519.GenerateKey(nil)
			if _, err := feedAll(t, otherPub, c, streams[0]); !errors.As(err, &re) || re.Reason != ReasonBadSignature {
				t.Fatalf("verified with another key: %v, want bad_signature", err)
			}
		})
	}
}

// swapLastSignatures returns stream with the signature of its last signed
// frame replaced by that of the signed frame before it.
func swapLastSignatures(t *testing.T, stream []byte) []byte {
	t.Helper()
	var sigAt []int // offsets of the signatures of MESSAGE and CHECKPOINT frames
	d := NewDecoder(0)
	d.Feed(stream)
	for {
		f, ok, err := d.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		body := int(f.Offset) + HeaderSize
		switch f.Kind {
		case KindMessage:
			sigAt = append(sigAt, body+49)
		case KindCheckpoint:
			sigAt = append(sigAt, body+48)
		}
	}
	if len(sigAt) < 2 {
		t.Fatalf("only %d signed frames", len(sigAt))
	}
	out := append([]byte(nil), stream...)
	last, prev := sigAt[len(sigAt)-1], sigAt[len(sigAt)-2]
	copy(out[last:last+ed25519.SignatureSize], stream[prev:prev+ed25519.SignatureSize])
	return out
}

// BenchmarkVerifyPerMessageCached is what every client after the first
// costs when they share a cache: the digest is recomputed and the
// signature found in the cache.
func BenchmarkVerifyPerMessageCached(b *testing.B) {
	e := benchEncoder(b, PerMessage)
	anchor, _, err := e.Anchor(nil)
	if err != nil {
		b.Fatal(err)
	}
	var msgs []byte
	now := time.Now()
	for range 1000 {
		msgs, _, _ = e.Append(msgs, message.Info, now, benchPayload)
	}
	c := NewSignatureCache(2000)
	deliver := func(*Message) {}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		v, _ := NewVerifier(e.PublicKey(), VerifierOptions{Cache: c})
		if err := v.Feed(anchor, deliver); err != nil {
			b.Fatal(err)
		}
		if err := v.Feed(msgs, deliver); err != nil {
			b.Fatal(err)
		}
		n += 1000
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}
