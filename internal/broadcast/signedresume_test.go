package broadcast

import (
	"crypto/ed25519"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

const resumeStream = "k5vq3xwz2m7hd4ta"

// startSignedRetaining runs a signed server of stream resumeStream that
// retains r.
func startSignedRetaining(t *testing.T, o SignedOptions, r Retention) (*Server, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Key = priv
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigned(ln, testLimits(), o, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	s.SetStream(resumeStream)
	s.SetRetention(r)
	runServer(t, s)
	return s, pub
}

// sendResume sends the client's RESUME for q.
func (c *signedClient) sendResume(t *testing.T, q signed.ResumeRequest) {
	t.Helper()
	b, err := c.v.Resume(q)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// resumeCache is shared by the resuming clients' verifiers: they verify
// the same frames again and again, as a relay's connections do, and the
// per-message mode's signatures would otherwise take most of the tests'
// time under the race detector. Each connection still checks every
// digest, chain, sequence number and time itself (docs/protocol.md).
// It is made at first use, not at the package's start, so that the
// memory tests before these run without it.
var resumeCache = sync.OnceValue(func() *signed.SignatureCache { return signed.NewSignatureCache(1 << 13) })

// dialResume connects and sends q at once.
func dialResume(t *testing.T, s *Server, pub ed25519.PublicKey, q signed.ResumeRequest) *signedClient {
	t.Helper()
	c := dialStranger(t, s, pub)
	v, err := signed.NewVerifier(pub, signed.VerifierOptions{Cache: resumeCache()})
	if err != nil {
		t.Fatal(err)
	}
	c.v = v
	c.sendResume(t, q)
	return c
}

// readThrough reads until message last has been delivered, and returns
// the RESUMED and the feed messages' sequence numbers, checking each
// payload.
func (c *signedClient) readThrough(t *testing.T, last uint64) (signed.Resumed, []uint64) {
	t.Helper()
	var seqs []uint64
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(seqs) == 0 || seqs[len(seqs)-1] < last {
		n, err := c.Read(c.buf)
		if ferr := c.v.Feed(c.buf[:n], func(m *signed.Message) {
			if m.Kind != signed.KindMessage && m.Kind != signed.KindChained {
				return
			}
			if string(m.Payload) != lineOf(m.Seq) {
				t.Errorf("message %d is %q", m.Seq, m.Payload)
			}
			seqs = append(seqs, m.Seq)
		}); ferr != nil {
			t.Fatalf("verifier rejected the stream: %v", ferr)
		}
		if err != nil {
			t.Fatalf("read after %d messages: %v", len(seqs), err)
		}
	}
	r, ok := c.v.Resumed()
	if !ok {
		t.Fatal("messages delivered without a RESUMED")
	}
	return r, seqs
}

// checkRun checks that seqs are from through to, each once, in order.
func checkRun(t *testing.T, seqs []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(seqs)) != to-from+1 {
		t.Fatalf("%d messages, want %d to %d", len(seqs), from, to)
	}
	for i, s := range seqs {
		if s != from+uint64(i) {
			t.Fatalf("message %d is seq %d, want %d", i, s, from+uint64(i))
		}
	}
}

// signedModes are the modes the tests run in, with the share of their
// lines the per-message mode takes: it signs and verifies every message,
// which takes far longer under the race detector.
var signedModes = []struct {
	name string
	mode signed.Mode
	div  uint64
}{{"chained", signed.Chained, 1}, {"per-message", signed.PerMessage, 3}}

// A client resuming at any retained line, across chunks, gets exactly
// the messages from it, verified, and then the live ones with no seam; a
// client of first or next starts there.
func TestSignedResumeWithinRetention(t *testing.T) {
	for _, m := range signedModes {
		t.Run(m.name, func(t *testing.T) {
			s, pub := startSignedRetaining(t, SignedOptions{Mode: m.mode, CheckpointEvery: 50}, Retention{Bytes: 64 << 20})
			n := 6000 / m.div // several chunks of frames
			publishRange(s, 1, n)
			froms := []uint64{1, 2, n / 3, n/2 + 1, n - 1, n}
			// The first line of every chunk, where the chain digest is
			// the one kept at the chunk's start.
			s.lines.mu.Lock()
			for c := s.lines.tail.next.Load(); c != nil; c = c.next.Load() {
				froms = append(froms, c.firstSeq)
			}
			s.lines.mu.Unlock()
			if len(froms) < 7 {
				t.Fatal("the lines fill one chunk, want several")
			}
			for _, from := range append(froms, n+1) {
				c := dialResume(t, s, pub, signed.ResumeRequest{From: signed.FromSeq, Seq: from, Stream: resumeStream})
				if from == n+1 {
					publishRange(s, n+1, n+1)
				}
				r, seqs := c.readThrough(t, max(n, from))
				if r.Result != signed.ResumedAsAsked || r.Stream != resumeStream || r.Anchor.Seq != from-1 {
					t.Fatalf("from %d: RESUMED %+v", from, r)
				}
				checkRun(t, seqs, from, max(n, from))
				c.Close()
			}
			c := dialResume(t, s, pub, signed.ResumeRequest{From: signed.FromFirst})
			_, seqs := c.readThrough(t, n+1)
			checkRun(t, seqs, 1, n+1)
			// Live after the catch-up, with no seam.
			publishRange(s, n+2, n+100)
			_, more := c.readThrough(t, n+100)
			checkRun(t, more, n+2, n+100)

			next := dialResume(t, s, pub, signed.ResumeRequest{From: signed.FromNext, Stream: resumeStream})
			poll.Eventually(t, wait, func() bool {
				_, ok := next.v.Resumed()
				if !ok {
					next.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
					k, _ := next.Read(next.buf)
					next.v.Feed(next.buf[:k], func(*signed.Message) {})
				}
				return ok
			}, "RESUMED of a live start")
			publishRange(s, n+101, n+110)
			r, seqs := next.readThrough(t, n+110)
			if r.Anchor.Seq != n+100 {
				t.Fatalf("live start anchored after %d, want %d", r.Anchor.Seq, n+100)
			}
			checkRun(t, seqs, n+101, n+110)
		})
	}
}

// A chunk that starts with a typed message (PublishMessage, which is
// encoded before the log finds it room) keeps the chain digest before
// it: a client resuming there verifies.
func TestSignedResumeAtChunkOfTypedMessages(t *testing.T) {
	s, pub := startSignedRetaining(t, SignedOptions{Mode: signed.Chained, CheckpointEvery: 50}, Retention{Bytes: 64 << 20})
	const n = 5000
	for seq := uint64(1); seq <= n; seq++ {
		s.PublishMessage(message.Message{Type: message.Warning, Text: lineOf(seq)})
	}
	var froms []uint64
	s.lines.mu.Lock()
	for c := s.lines.tail.next.Load(); c != nil; c = c.next.Load() {
		froms = append(froms, c.firstSeq)
	}
	s.lines.mu.Unlock()
	if len(froms) == 0 {
		t.Fatal("the messages fill one chunk, want several")
	}
	for _, from := range froms {
		c := dialResume(t, s, pub, signed.ResumeRequest{From: signed.FromSeq, Seq: from, Stream: resumeStream})
		_, seqs := c.readThrough(t, n)
		checkRun(t, seqs, from, n)
		c.Close()
	}
}

// A client resuming from a time gets every line published since, and at
// most the rest of the chunk before them, not the older chunks.
func TestSignedResumeSince(t *testing.T) {
	s, pub := startSignedRetaining(t, SignedOptions{Mode: signed.Chained, CheckpointEvery: 50}, Retention{Bytes: 64 << 20})
	const old, n = 6000, 6100 // the old lines fill several chunks
	publishRange(s, 1, old)
	since := time.Now()
	publishRange(s, old+1, n)
	c := dialResume(t, s, pub, signed.ResumeRequest{From: signed.FromSince, Since: since})
	r, seqs := c.readThrough(t, n)
	if r.Result != signed.ResumedAsAsked || seqs[0] <= 1 || seqs[0] > old+1 {
		t.Fatalf("RESUMED %+v, first message %d; want one after the oldest chunk, at most %d", r, seqs[0], old+1)
	}
	checkRun(t, seqs, seqs[0], n)
}

// A client whose first line is no longer retained is told, signed, which
// lines are gone and starts at the oldest retained.
func TestSignedResumeGap(t *testing.T) {
	for _, m := range signedModes {
		t.Run(m.name, func(t *testing.T) {
			s, pub := startSignedRetaining(t, SignedOptions{Mode: m.mode, CheckpointEvery: 50}, Retention{Bytes: 1, Lines: 1000 / int64(m.div)})
			n := 12000 / m.div
			publishRange(s, 1, n)
			first := s.Retained().First
			if first <= 2 {
				t.Fatalf("retention kept everything from %d", first)
			}
			c := dialResume(t, s, pub, signed.ResumeRequest{From: signed.FromSeq, Seq: 2, Stream: resumeStream})
			r, seqs := c.readThrough(t, n)
			if g1, g2, ok := r.Gap(); !ok || g1 != 2 || g2 != first-1 {
				t.Fatalf("RESUMED %+v: gap %d-%d, want 2-%d", r, g1, g2, first-1)
			}
			checkRun(t, seqs, first, n)
			if st := s.Stats(); st.Resumed != 1 || st.Gaps != 1 || st.GapLines != first-2 {
				t.Errorf("counted %d resumed, %d gaps of %d lines; want 1, 1 of %d", st.Resumed, st.Gaps, st.GapLines, first-2)
			}
		})
	}
}

// A client naming another stream, or numbers ahead of this one, is told
// so and given this stream from its oldest line, never other lines under
// its numbers.
func TestSignedResumeOtherStream(t *testing.T) {
	s, pub := startSignedRetaining(t, SignedOptions{Mode: signed.Chained}, Retention{Bytes: 64 << 20})
	publishRange(s, 1, 300)
	for _, q := range []signed.ResumeRequest{
		{From: signed.FromSeq, Seq: 100, Stream: "another-stream"},
		{From: signed.FromSeq, Seq: 5000, Stream: resumeStream},
		{From: signed.FromFirst, Stream: "another-stream"},
	} {
		c := dialResume(t, s, pub, q)
		r, seqs := c.readThrough(t, 300)
		if r.Result != signed.ResumedOtherStream || r.Stream != resumeStream {
			t.Fatalf("%+v: RESUMED %+v", q, r)
		}
		checkRun(t, seqs, 1, 300)
	}
}

// A client that reads the live start before it resumes passes over what
// came before the RESUMED and gets the messages asked for exactly once.
func TestSignedResumeAfterLiveStart(t *testing.T) {
	for _, m := range signedModes {
		t.Run(m.name, func(t *testing.T) {
			s, pub := startSignedRetaining(t, SignedOptions{Mode: m.mode}, Retention{Bytes: 64 << 20})
			publishRange(s, 1, 50)
			c := dialSigned(t, s, pub)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, ok := c.v.Anchor(); ok {
					break
				}
				k, err := c.Read(c.buf[:1])
				if err != nil {
					t.Fatal(err)
				}
				c.v.Feed(c.buf[:k], func(*signed.Message) {})
			}
			publishRange(s, 51, 80) // sent live, before the RESUME
			poll.Eventually(t, wait, func() bool { return s.Clients()[0].LinesSent >= 30 }, "live lines sent")
			c.sendResume(t, signed.ResumeRequest{From: signed.FromSeq, Seq: 10, Stream: resumeStream})
			publishRange(s, 81, 90)
			_, seqs := c.readThrough(t, 90)
			checkRun(t, seqs, 10, 90)
			if c.v.Stats().Skipped == 0 {
				t.Fatal("nothing passed over before the RESUMED: the live start was not exercised")
			}
		})
	}
}

// With authentication, a RESUME in place of the AUTH gets the client the
// CHALLENGE only; after the AUTH it resumes.
func TestSignedResumeAfterAuth(t *testing.T) {
	s, pub := startSignedRetaining(t, SignedOptions{Mode: signed.Chained, Authenticate: true,
		Keys: keySet{clientKey.Public().(ed25519.PublicKey)}}, Retention{Bytes: 64 << 20})
	publishRange(s, 1, 100)

	stranger := dialStranger(t, s, pub)
	stranger.readChallenge(t)
	stranger.sendResume(t, signed.ResumeRequest{From: signed.FromFirst})
	stranger.readNothing(t, "a RESUME without AUTH")
	poll.Eventually(t, wait, func() bool { return s.Stats().AuthFailed == 1 }, "auth failure counted")

	c := dialStranger(t, s, pub)
	c.sendAuth(t, clientKey, c.readChallenge(t))
	c.sendResume(t, signed.ResumeRequest{From: signed.FromSeq, Seq: 40, Stream: resumeStream})
	_, seqs := c.readThrough(t, 100)
	checkRun(t, seqs, 40, 100)
}

// A RESUME after another frame, or a malformed one, closes its client as
// a rejected frame.
func TestSignedResumeRefused(t *testing.T) {
	s, pub := startSignedRetaining(t, SignedOptions{Mode: signed.PerMessage}, Retention{Bytes: 64 << 20})
	publishRange(s, 1, 10)
	late := dialSigned(t, s, pub)
	frame, err := signed.AppendResume(signed.AppendPing(nil, 1), signed.ResumeRequest{From: signed.FromFirst})
	if err != nil {
		t.Fatal(err)
	}
	late.Write(frame)
	bad := dialSigned(t, s, pub)
	bad.Write([]byte{signed.Magic, byte(signed.KindResume), 0, 0, 0, 3, 1, 2, 3})
	poll.Eventually(t, wait, func() bool { return s.Stats().Rejected == 2 }, "both RESUMEs rejected")
	for _, c := range []*signedClient{late, bad} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("connection not closed: %v", err)
		}
	}
}

// A signed server of a stream numbered elsewhere (SetStart, PublishAt, as
// the shared feed has) signs its messages with the stream's numbers: a
// client resumes at them, and one asking for numbers the stream jumped
// over is told of the gap, signed.
func TestSignedResumeOnTheStreamsNumbers(t *testing.T) {
	for _, m := range signedModes {
		t.Run(m.name, func(t *testing.T) {
			_, priv, _ := ed25519.GenerateKey(nil)
			pub := priv.Public().(ed25519.PublicKey)
			ln, err := Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s, err := NewSigned(ln, testLimits(), SignedOptions{Key: priv, Mode: m.mode, CheckpointEvery: 50}, logging.Discard())
			if err != nil {
				t.Fatal(err)
			}
			s.SetStream(resumeStream)
			s.SetStart(100)
			s.SetRetention(Retention{Bytes: 64 << 20})
			runServer(t, s)
			publishRange(s, 100, 400)
			var jumped [][]byte
			for seq := uint64(1000); seq <= 1100; seq++ {
				jumped = append(jumped, []byte(lineOf(seq)))
			}
			live := dialResume(t, s, pub, signed.ResumeRequest{From: signed.FromFirst})
			r, seqs := live.readThrough(t, 400)
			if r.Anchor.Seq != 99 {
				t.Fatalf("the oldest message anchored after %d, want 99", r.Anchor.Seq)
			}
			checkRun(t, seqs, 100, 400)
			c := dialResume(t, s, pub, signed.ResumeRequest{From: signed.FromSeq, Seq: 150, Stream: resumeStream})
			_, seqs = c.readThrough(t, 400)
			checkRun(t, seqs, 150, 400)
			if err := s.PublishAt(1000, jumped); err != nil {
				t.Fatal(err)
			}
			c = dialResume(t, s, pub, signed.ResumeRequest{From: signed.FromSeq, Seq: 500, Stream: resumeStream})
			r, seqs = c.readThrough(t, 1100)
			if g1, g2, ok := r.Gap(); !ok || g1 != 500 || g2 != 999 {
				t.Fatalf("RESUMED %+v: gap %d-%d, want 500-999", r, g1, g2)
			}
			checkRun(t, seqs, 1000, 1100)
			// A client verifying across the jump is told messages are
			// missing, and never given other ones under their numbers.
			live.SetReadDeadline(time.Now().Add(10 * time.Second))
			for live.v.Err() == nil {
				k, err := live.Read(live.buf)
				live.v.Feed(live.buf[:k], func(*signed.Message) {})
				if err != nil {
					break
				}
			}
			if signed.ReasonOf(live.v.Err()) != signed.ReasonGap {
				t.Fatalf("across the jump: %v, want a gap", live.v.Err())
			}
		})
	}
}

// Clients killed at random points under load reconnect with the last
// sequence number they delivered and end with every message exactly
// once, in order, all verified.
func TestSignedResumeUnderLoad(t *testing.T) {
	for _, m := range signedModes {
		t.Run(m.name, func(t *testing.T) {
			s, pub := startSignedRetaining(t, SignedOptions{Mode: m.mode, CheckpointEvery: 64}, Retention{Bytes: 64 << 20})
			n := 30000 / (m.div * m.div)
			var wg sync.WaitGroup
			wg.Go(func() {
				for seq := uint64(1); seq <= n; seq += 100 {
					publishRange(s, seq, min(seq+99, n))
					time.Sleep(time.Millisecond) // a paced feed, not a synchronisation
				}
			})
			defer wg.Wait()
			rng := rand.New(rand.NewPCG(uint64(m.mode), 7))
			var got []uint64
			stream := ""
			for connections := 0; len(got) == 0 || got[len(got)-1] < n; connections++ {
				if connections > 10000 {
					t.Fatalf("no end after %d connections, %d messages", connections, len(got))
				}
				q := signed.ResumeRequest{From: signed.FromFirst}
				if len(got) > 0 {
					q = signed.ResumeRequest{From: signed.FromSeq, Seq: got[len(got)-1] + 1, Stream: stream}
				}
				got = append(got, resumeOnce(t, s, pub, q, rng.IntN(int(n/10))+1, n, &stream)...)
			}
			checkRun(t, got, 1, n)
		})
	}
}

// resumeOnce connects with q, delivers at most limit messages or until
// message last, then drops the connection at once, without a word.
func resumeOnce(t *testing.T, s *Server, pub ed25519.PublicKey, q signed.ResumeRequest, limit int, last uint64, stream *string) []uint64 {
	t.Helper()
	c := dialResume(t, s, pub, q)
	defer c.Close()
	var seqs []uint64
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(seqs) < limit {
		k, err := c.Read(c.buf[:rand.IntN(len(c.buf))+1])
		if ferr := c.v.Feed(c.buf[:k], func(m *signed.Message) {
			switch m.Kind {
			case signed.KindResumed:
				r, _ := c.v.Resumed()
				if r.Result != signed.ResumedAsAsked {
					t.Errorf("RESUMED %+v inside the retention", r)
				}
				*stream = r.Stream
			case signed.KindMessage, signed.KindChained:
				if len(seqs) < limit {
					if string(m.Payload) != lineOf(m.Seq) {
						t.Errorf("message %d is %q", m.Seq, m.Payload)
					}
					seqs = append(seqs, m.Seq)
				}
			}
		}); ferr != nil {
			t.Fatalf("verifier rejected the stream: %v", ferr)
		}
		if len(seqs) > 0 && seqs[len(seqs)-1] >= last {
			break
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no message for 20 s after %d", len(seqs))
			}
			t.Fatal(err)
		}
	}
	return seqs
}
