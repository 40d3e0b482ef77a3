package main

// The chattyd-signed target: chattyd with its signed listener
// (docs/protocol.md), whose subscribers verify every message with the
// daemon's public key before they count it. The tool makes the identity
// key and chattyd's configuration in a temporary directory; the feeder
// writes to chattyd's stdin as for the text target, and each verified
// message's payload (the feed line) goes through the same accounting as
// a text line, so latency runs from the feed write to the verified
// delivery.

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// signedConfig holds the flags of the chattyd-signed target.
type signedConfig struct {
	mode     string // "chained" or "per-message"
	every    int    // broadcast.signed.checkpoint_every
	interval time.Duration
	cache    bool // subscribers share a signed.SignatureCache

	// verifyKey, when set, replaces the daemon's public key in the
	// subscribers' Verifiers: tests use it to see a rejection reported.
	verifyKey ed25519.PublicKey
}

// signedSetup is what the tool prepared for a chattyd-signed run.
type signedSetup struct {
	dir    string // temporary: the key and the configuration
	config string // chattyd --config FILE
	addr   string // broadcast.signed.listen
	pub    ed25519.PublicKey
	cache  *signed.SignatureCache // nil without -sigcache
	// claimed is the highest seq whose signature a subscriber prefetched.
	claimed atomic.Uint64
}

// prepareSigned makes an identity key and a chattyd configuration with a
// signed listener on a free 127.0.0.1 port. The caller removes s.dir.
func prepareSigned(sc signedConfig, cacheSize int) (s *signedSetup, err error) {
	dir, err := os.MkdirTemp("", "chattyload-signed-")
	if err != nil {
		return nil, fmt.Errorf("signed target: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	keyFile := filepath.Join(dir, "identity.key")
	if _, err := identity.Generate(keyFile); err != nil {
		return nil, fmt.Errorf("signed target: %w", err)
	}
	// Verify with the published .pub file, as a client would.
	pub, err := identity.LoadPublicKey(identity.PublicPath(keyFile))
	if err != nil {
		return nil, fmt.Errorf("signed target: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	if sc.verifyKey != nil {
		pub = sc.verifyKey
	}
	s = &signedSetup{dir: dir, config: filepath.Join(dir, "chattyd.yaml"), addr: addr, pub: pub}
	yaml := fmt.Sprintf("version: 1\nidentity:\n  key_file: %q\nbroadcast:\n  signed:\n    listen: %q\n    mode: %s\n    checkpoint_every: %d\n    checkpoint_interval: %s\n",
		keyFile, addr, sc.mode, sc.every, sc.interval)
	if err := os.WriteFile(s.config, []byte(yaml), 0o600); err != nil {
		return nil, fmt.Errorf("signed target: %w", err)
	}
	if sc.cache {
		s.cache = signed.NewSignatureCache(cacheSize)
	}
	return s, nil
}

// wrap wraps a new subscriber's connection in a Verifier of its own.
func (s *signedSetup) wrap(c net.Conn, ack bool, bufSize int) *signedSubConn {
	v, err := signed.NewVerifier(s.pub, signed.VerifierOptions{Cache: s.cache})
	if err != nil {
		panic(err) // the key was loaded and checked by identity.LoadPublicKey
	}
	var pre *prefetcher
	if s.cache != nil {
		pre = &prefetcher{pub: s.pub, cache: s.cache, claimed: &s.claimed, dec: signed.NewDecoder(0)}
	}
	return newSignedSubConn(c, v, pre, ack, bufSize)
}

// signedSubConn is a subscriber's connection to the signed listener. Read
// verifies the frames received and returns the payload of each verified
// message as a line, "payload\n"; nothing unverified ever reaches the
// caller. With ack set it acknowledges each verified message by sequence
// number, the ACKs of one read in one write, as chatty's signed worker
// does. The first rejection is returned by Read once the lines verified
// before it have been read.
type signedSubConn struct {
	net.Conn
	v     *signed.Verifier
	ack   bool
	pre   *prefetcher // nil without a cache
	raw   []byte
	lines []byte // verified lines, lines[off:] not returned yet
	off   int
	acks  []byte
	err   error // returned once lines are exhausted
}

func newSignedSubConn(c net.Conn, v *signed.Verifier, pre *prefetcher, ack bool, bufSize int) *signedSubConn {
	return &signedSubConn{Conn: c, v: v, pre: pre, ack: ack, raw: make([]byte, bufSize)}
}

// Read implements net.Conn.
func (s *signedSubConn) Read(p []byte) (int, error) {
	for s.off == len(s.lines) {
		if s.err != nil {
			return 0, s.err
		}
		s.fill()
	}
	n := copy(p, s.lines[s.off:])
	s.off += n
	return n, nil
}

// fill reads the connection once and verifies what came.
func (s *signedSubConn) fill() {
	s.lines, s.off = s.lines[:0], 0
	n, err := s.Conn.Read(s.raw)
	if n > 0 {
		s.pre.scan(s.raw[:n])
		if verr := s.v.Feed(s.raw[:n], s.deliver); verr != nil {
			err = fmt.Errorf("signed stream rejected: %w", verr)
		} else if len(s.acks) > 0 {
			if _, werr := s.Conn.Write(s.acks); werr != nil && err == nil {
				err = werr
			}
		}
		s.acks = s.acks[:0]
	}
	s.err = err
}

func (s *signedSubConn) deliver(m *signed.Message) {
	if m.Kind != signed.KindMessage && m.Kind != signed.KindChained {
		return
	}
	s.lines = append(append(s.lines, m.Payload...), '\n')
	if s.ack {
		s.acks = signed.AppendAck(s.acks, m.Seq)
	}
}

// prefetcher hands the signatures of the MESSAGE frames a subscriber has
// just read to the shared cache before its Verifier gets to them. Every
// subscriber reads the same frames at about the same time; without it
// they would queue behind whichever verifies the next signature, using
// one CPU however many there are. With it a subscriber verifies the
// signatures of the messages nobody has claimed yet, so the checks spread
// over all CPUs; each is still made once. Its only effect is on time:
// every Verifier still asks the cache about every signature, after
// checking the digest, and what nobody prefetched it verifies itself.
type prefetcher struct {
	pub     ed25519.PublicKey
	cache   *signed.SignatureCache
	claimed *atomic.Uint64 // the highest seq a subscriber prefetched, shared
	dec     *signed.Decoder
}

// Offsets in a MESSAGE body (docs/protocol.md, "Frames").
const (
	messageDigestAt = 17
	messageSigAt    = 49
	messageSigEnd   = 113
)

// scan prefetches the signatures of the whole MESSAGE frames in the
// stream so far that no subscriber claimed. It stops at the first
// framing error, which the subscriber's Verifier reports.
func (p *prefetcher) scan(b []byte) {
	if p == nil {
		return
	}
	p.dec.Feed(b)
	for {
		f, ok, err := p.dec.Next()
		if err != nil || !ok {
			return
		}
		if f.Kind == signed.KindMessage && len(f.Body) >= messageSigEnd && p.claim(binary.BigEndian.Uint64(f.Body)) {
			p.cache.Prefetch(p.pub, f.Body[messageDigestAt:messageSigAt], f.Body[messageSigAt:messageSigEnd])
		}
	}
}

// claim reports whether seq is above every seq claimed so far, and makes
// it the highest. Subscribers behind the first skip the cache altogether.
func (p *prefetcher) claim(seq uint64) bool {
	for {
		top := p.claimed.Load()
		if seq <= top {
			return false
		}
		if p.claimed.CompareAndSwap(top, seq) {
			return true
		}
	}
}

// signedCounts are the signed target's counters over the whole run.
type signedCounts struct {
	verified    uint64 // messages delivered as verified, all subscribers
	checks      uint64 // Ed25519 signature verifications
	checkpoints uint64 // checkpoints verified, all subscribers
	rejected    uint64 // subscribers whose verifier rejected the stream
}

// countSigned adds up the verifiers' counters; call it once every reader
// has returned.
func countSigned(subs []*subscriber, cache *signed.SignatureCache) signedCounts {
	var c signedCounts
	for _, s := range subs {
		sc, ok := s.conn.(*signedSubConn)
		if !ok {
			continue
		}
		st := sc.v.Stats()
		c.verified += st.Verified
		c.checkpoints += st.Checkpoints
		if len(st.Rejected) > 0 {
			c.rejected++
		}
		a, anchored := sc.v.Anchor()
		switch {
		case !anchored:
		case a.Mode == signed.PerMessage:
			c.checks += 1 + st.Verified // the ANCHOR and each message
		default:
			c.checks += 1 + st.Checkpoints
		}
	}
	if cache != nil {
		c.checks = cache.Stats().Checks
	}
	return c
}
