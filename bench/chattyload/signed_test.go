package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/chatty-dev/chatty/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// fakeConn reads from r and records what is written.
type fakeConn struct {
	net.Conn // nil: only Read and Write are used
	r        io.Reader
	w        bytes.Buffer
}

func (c *fakeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// signedStream is what a subscriber of a daemon signing with a new key
// receives: an ANCHOR, n messages "line <i>" and a last checkpoint.
type signedStream struct {
	pub    ed25519.PublicKey
	bytes  []byte
	frames [][2]int // [start, end) of each frame after the ANCHOR
}

func encodeSigned(t *testing.T, mode signed.Mode, n int) signedStream {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := signed.NewEncoder(priv, mode, signed.EncoderOptions{CheckpointEvery: 4, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s := signedStream{pub: pub}
	if s.bytes, _, err = enc.Anchor(nil); err != nil {
		t.Fatal(err)
	}
	mark := func(from int) {
		for from < len(s.bytes) {
			end := from + signed.HeaderSize + int(binary.BigEndian.Uint32(s.bytes[from+2:])) // after magic and kind
			s.frames = append(s.frames, [2]int{from, end})
			from = end
		}
	}
	for i := range n {
		from := len(s.bytes)
		if s.bytes, _, err = enc.Append(s.bytes, message.Info, time.Now(), fmt.Appendf(nil, "line %d", i)); err != nil {
			t.Fatal(err)
		}
		mark(from)
	}
	from := len(s.bytes)
	s.bytes = enc.Checkpoint(s.bytes)
	mark(from)
	return s
}

// readAll reads c with a small buffer until it fails, and returns what it
// read and the error.
func readAll(c net.Conn) (string, error) {
	var out []byte
	p := make([]byte, 7)
	for {
		n, err := c.Read(p)
		out = append(out, p[:n]...)
		if err != nil {
			return string(out), err
		}
	}
}

func wantLines(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()
}

var signedCases = []struct {
	name  string
	mode  signed.Mode
	cache bool
}{
	{"per-message", signed.PerMessage, false},
	{"per-message, cache", signed.PerMessage, true},
	{"chained", signed.Chained, false},
	{"chained, cache", signed.Chained, true},
}

// A signed subscriber returns exactly the verified payloads as lines,
// however the frames are split, and acks each by sequence number.
func TestSignedSubConnDelivers(t *testing.T) {
	const n = 10
	for _, tc := range signedCases {
		t.Run(tc.name, func(t *testing.T) {
			st := encodeSigned(t, tc.mode, n)
			setup := &signedSetup{pub: st.pub}
			if tc.cache {
				setup.cache = signed.NewSignatureCache(100)
			}
			fc := &fakeConn{r: iotest.HalfReader(bytes.NewReader(st.bytes))}
			got, err := readAll(setup.wrap(fc, true, 64<<10))
			if err != io.EOF {
				t.Fatalf("read ended with %v, want EOF", err)
			}
			if got != wantLines(n) {
				t.Fatalf("got %q, want %q", got, wantLines(n))
			}
			var acks []byte
			for seq := range uint64(n) {
				acks = signed.AppendAck(acks, seq+1)
			}
			if !bytes.Equal(fc.w.Bytes(), acks) {
				t.Fatalf("wrote %x, want an ACK of every seq: %x", fc.w.Bytes(), acks)
			}
		})
	}
}

// A subscriber stops at the first frame that fails verification: it
// returns the lines verified before it and then the rejection, whether
// the payload was altered or a signature taken from another message (one
// the cache holds as valid for that other message).
func TestSignedSubConnRejects(t *testing.T) {
	const n, bad = 10, 5
	for _, tc := range signedCases {
		t.Run(tc.name, func(t *testing.T) {
			st := encodeSigned(t, tc.mode, n)
			alter := map[string]func([]byte){
				"payload": func(b []byte) { b[st.frames[bad][1]-1] ^= 1 },
			}
			if tc.mode == signed.PerMessage {
				alter["signature"] = func(b []byte) {
					sig := func(i int) int { return st.frames[i][0] + signed.HeaderSize + messageSigAt }
					copy(b[sig(bad):sig(bad)+ed25519.SignatureSize], st.bytes[sig(bad-1):])
				}
			}
			for what, f := range alter {
				b := bytes.Clone(st.bytes)
				f(b)
				setup := &signedSetup{pub: st.pub}
				if tc.cache {
					setup.cache = signed.NewSignatureCache(100)
					if _, err := readAll(setup.wrap(&fakeConn{r: bytes.NewReader(st.bytes)}, false, 64<<10)); err != io.EOF {
						t.Fatalf("the intact stream: %v", err) // fills the cache
					}
				}
				got, err := readAll(setup.wrap(&fakeConn{r: iotest.HalfReader(bytes.NewReader(b))}, false, 64<<10))
				var re *signed.RejectError
				if !errors.As(err, &re) {
					t.Fatalf("%s altered: read ended with %v, want a rejection", what, err)
				}
				if !strings.HasPrefix(wantLines(n), got) || strings.Count(got, "\n") > bad {
					t.Fatalf("%s altered: delivered %q", what, got)
				}
				t.Logf("%s altered: %d lines, then %v", what, strings.Count(got, "\n"), err)
			}
		})
	}
}

// measureSigned runs a short measurement against a real chattyd's signed
// listener.
func measureSigned(t *testing.T, sc signedConfig, rate int) (*result, error) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts chattyd")
	}
	cfg := config{
		target: "chattyd-signed", bin: harness.BuildBinaries(t).Chattyd,
		subs: 3, size: 64, rate: rate, ack: true,
		warmup: 200 * time.Millisecond, duration: 500 * time.Millisecond, drain: 15 * time.Second,
		window: 256, bufSize: 64 << 10, sampleMod: 1, signed: sc,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return measure(ctx, cfg)
}

// Against chattyd, every line fed reaches every subscriber verified, in
// both modes, with and without the cache.
func TestSignedTarget(t *testing.T) {
	tests := []struct {
		name string
		sc   signedConfig
		rate int
	}{
		{"chained, cache, full speed", signedConfig{mode: "chained", every: 100, interval: 5 * time.Millisecond, cache: true}, 0},
		{"per-message, no cache, 500 lines/s", signedConfig{mode: "per-message", every: 1, interval: time.Millisecond}, 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := measureSigned(t, tc.sc, tc.rate)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res.human())
			if len(res.Errors) > 0 {
				t.Fatalf("errors: %q", res.Errors)
			}
			if res.Deliveries == 0 || res.LastSeq == 0 || res.Samples == 0 {
				t.Fatalf("nothing measured: %d deliveries, %d lines, %d latency samples", res.Deliveries, res.LastSeq, res.Samples)
			}
			// Verified counts the probes too.
			if res.Verified < 3*res.LastSeq || res.Lost != 0 || res.Rejected != 0 {
				t.Fatalf("%d fed to 3 subscribers: %d verified, %d lost, %d rejected", res.LastSeq, res.Verified, res.Lost, res.Rejected)
			}
			if res.SigChecks == 0 {
				t.Fatal("no signature was checked")
			}
		})
	}
}

// Subscribers that cannot verify the stream report it and fail the run.
func TestSignedTargetReportsRejection(t *testing.T) {
	wrong, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := measureSigned(t, signedConfig{mode: "chained", every: 100, interval: 5 * time.Millisecond, cache: true, verifyKey: wrong}, 0)
	if err == nil {
		t.Fatalf("a stream verified with the wrong key was measured: %s", res.human())
	}
	if !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("error %q does not say the signature was bad", err)
	}
}

// BenchmarkSignedSubscribers is the tool's own ceiling at per-message
// signing: 100 subscribers in goroutines read the same 2000 messages from
// memory, verify them through one fresh shared cache (each signature is
// checked once per iteration) and account for the lines as on chattyd's
// connections. msgs/s counts messages every subscriber verified; an
// end-to-end run cannot go faster on the same CPUs, and goes slower since
// chattyd signs on them too.
func BenchmarkSignedSubscribers(b *testing.B) {
	const subs, n = 100, 2000
	pub, priv, _ := ed25519.GenerateKey(nil)
	enc, _ := signed.NewEncoder(priv, signed.PerMessage, signed.EncoderOptions{})
	frames, _, _ := enc.Anchor(nil)
	for i := range n {
		line := appendLine(nil, uint64(i+1), 0, 64)
		frames, _, _ = enc.Append(frames, message.Info, time.Now(), line[:len(line)-1])
	}
	for b.Loop() {
		setup := &signedSetup{pub: pub, cache: signed.NewSignatureCache(2 * n)}
		var wg sync.WaitGroup
		var failed atomic.Bool
		for range subs {
			sub := &subscriber{conn: setup.wrap(&fakeConn{r: bytes.NewReader(frames)}, false, 256<<10), buf: make([]byte, 256<<10)}
			sub.st = stream{tracker: newTracker(), sampleMod: 64, hist: new(histogram)}
			wg.Go(func() {
				var closing atomic.Bool
				sub.read(&closing, noWindow, func() int64 { return 0 })
				if sub.err != io.EOF || sub.st.received != n {
					failed.Store(true)
				}
			})
		}
		wg.Wait()
		if failed.Load() {
			b.Fatal("a subscriber did not verify every message")
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
}
