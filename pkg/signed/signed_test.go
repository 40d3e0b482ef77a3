package signed

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

// testNow is the fixed clock of the tests.
var testNow = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

// testKey returns the daemon key of seed 0x00..0x1f.
func testKey() ed25519.PrivateKey { return testPriv }

var testPriv = func() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}()

// sent is a message as the test encoded it.
type sent struct {
	seq     uint64
	typ     message.Type
	ts      time.Time
	payload string
}

// stream is an encoded test stream: its bytes and the frames' boundaries.
type stream struct {
	bytes  []byte
	frames [][2]int // [start, end) of each frame
	kinds  []Kind
	msgs   []sent
	// covered[i] is the number of messages verified once frame i is read.
	covered []int
}

func newTestEncoder(t testing.TB, mode Mode, every int) *Encoder {
	t.Helper()
	e, err := NewEncoder(testKey(), mode, EncoderOptions{
		StreamID:           StreamID{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf},
		CheckpointEvery:    every,
		CheckpointInterval: time.Hour,
		Now:                fixedNow,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// encodeStream encodes an anchor and n messages (checkpointing every
// `every` in Chained mode, and once at the end).
func encodeStream(t testing.TB, mode Mode, n, every int) *stream {
	t.Helper()
	e := newTestEncoder(t, mode, every)
	s := &stream{}
	add := func(before int) {
		// Split what was appended since before into frames.
		for off := before; off < len(s.bytes); {
			d := NewDecoder(0)
			d.Feed(s.bytes[off:])
			f, ok, err := d.Next()
			if err != nil || !ok {
				t.Fatalf("re-decode at %d: %v %v", off, ok, err)
			}
			end := off + HeaderSize + len(f.Body)
			s.frames = append(s.frames, [2]int{off, end})
			s.kinds = append(s.kinds, f.Kind)
			cov := 0
			if len(s.covered) > 0 {
				cov = s.covered[len(s.covered)-1]
			}
			switch f.Kind {
			case KindMessage:
				cov++
			case KindCheckpoint:
				cov = len(s.msgs)
			}
			s.covered = append(s.covered, cov)
			off = end
		}
	}
	var err error
	s.bytes, _, err = e.Anchor(s.bytes)
	if err != nil {
		t.Fatal(err)
	}
	add(0)
	types := message.Types()
	for i := range n {
		m := sent{typ: types[i%len(types)], ts: testNow.Add(time.Duration(i) * time.Millisecond), payload: fmt.Sprintf("message %d", i)}
		before := len(s.bytes)
		s.bytes, m.seq, err = e.Append(s.bytes, m.typ, m.ts, []byte(m.payload))
		if err != nil {
			t.Fatal(err)
		}
		s.msgs = append(s.msgs, m)
		add(before)
	}
	before := len(s.bytes)
	s.bytes = e.Checkpoint(s.bytes)
	add(before)
	return s
}

type result struct {
	msgs []sent
	err  error
}

// verify feeds the pieces to a new verifier and closes it.
func verify(t testing.TB, pieces ...[]byte) (result, *Verifier) {
	t.Helper()
	v, err := NewVerifier(testKey().Public().(ed25519.PublicKey), VerifierOptions{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	var r result
	deliver := func(m *Message) {
		if m.Kind == KindMessage || m.Kind == KindChained {
			r.msgs = append(r.msgs, sent{seq: m.Seq, typ: m.Type, ts: m.Time, payload: string(m.Payload)})
		}
	}
	for _, p := range pieces {
		if r.err = v.Feed(p, deliver); r.err != nil {
			return r, v
		}
	}
	r.err = v.Close()
	return r, v
}

// checkPrefix checks that got is the first messages of want, unaltered.
func checkPrefix(t *testing.T, got, want []sent) {
	t.Helper()
	if len(got) > len(want) {
		t.Fatalf("delivered %d messages, only %d sent", len(got), len(want))
	}
	for i, m := range got {
		w := want[i]
		if m.seq != w.seq || m.typ != w.typ || !m.ts.Equal(w.ts) || m.payload != w.payload {
			t.Fatalf("delivered %+v as message %d, sent %+v", m, i, w)
		}
	}
}

var modes = []struct {
	name  string
	mode  Mode
	every int
}{
	{"per-message", PerMessage, 0},
	{"chained", Chained, 3},
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			s := encodeStream(t, tc.mode, 20, tc.every)
			r, v := verify(t, s.bytes)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if len(r.msgs) != len(s.msgs) {
				t.Fatalf("delivered %d of %d", len(r.msgs), len(s.msgs))
			}
			checkPrefix(t, r.msgs, s.msgs)
			st := v.Stats()
			if st.Verified != uint64(len(s.msgs)) || len(st.Rejected) != 0 || st.Pending != 0 {
				t.Errorf("stats %+v", st)
			}
			if tc.mode == Chained && st.Checkpoints != 7 { // 20 messages every 3, and the last
				t.Errorf("%d checkpoints", st.Checkpoints)
			}
			a, ok := v.Anchor()
			if !ok || a.Mode != tc.mode || a.Seq != 0 {
				t.Errorf("anchor %+v %v", a, ok)
			}
		})
	}
}

// TestSplitAnywhere feeds the stream cut at every position, and byte by
// byte: the result never depends on how the bytes arrive.
func TestSplitAnywhere(t *testing.T) {
	for _, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			s := encodeStream(t, tc.mode, 4, tc.every)
			for i := 0; i <= len(s.bytes); i++ {
				r, _ := verify(t, s.bytes[:i], s.bytes[i:])
				if r.err != nil || len(r.msgs) != len(s.msgs) {
					t.Fatalf("cut at %d: %d messages, %v", i, len(r.msgs), r.err)
				}
			}
			pieces := make([][]byte, len(s.bytes))
			for i := range s.bytes {
				pieces[i] = s.bytes[i : i+1]
			}
			r, _ := verify(t, pieces...)
			if r.err != nil || len(r.msgs) != len(s.msgs) {
				t.Fatalf("byte by byte: %d messages, %v", len(r.msgs), r.err)
			}
			checkPrefix(t, r.msgs, s.msgs)
		})
	}
}

// TestTamperEveryByte flips each byte of a stream in turn: the verifier
// must reject the stream, count the rejection, and deliver nothing of the
// altered frame or after it.
func TestTamperEveryByte(t *testing.T) {
	for _, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			s := encodeStream(t, tc.mode, 5, tc.every)
			frame := 0
			for i := range s.bytes {
				for s.frames[frame][1] <= i {
					frame++
				}
				safe := 0 // messages verified before the altered frame
				if frame > 0 {
					safe = s.covered[frame-1]
				}
				for _, mask := range []byte{0x01, 0xff} {
					b := bytes.Clone(s.bytes)
					b[i] ^= mask
					r, v := verify(t, b)
					if r.err == nil {
						t.Fatalf("byte %d ^ %#x (frame %d, %v): not detected", i, mask, frame, s.kinds[frame])
					}
					if len(r.msgs) > safe {
						t.Fatalf("byte %d ^ %#x (frame %d, %v): delivered %d messages, only %d precede it", i, mask, frame, s.kinds[frame], len(r.msgs), safe)
					}
					checkPrefix(t, r.msgs, s.msgs)
					if rej := v.Stats().Rejected; rej[ReasonOf(r.err)] != 1 {
						t.Fatalf("byte %d: rejection %v not counted: %v", i, r.err, rej)
					}
				}
			}
		})
	}
}

// frameList returns the stream's frames as separate byte slices.
func (s *stream) frameList() [][]byte {
	out := make([][]byte, len(s.frames))
	for i, f := range s.frames {
		out[i] = s.bytes[f[0]:f[1]]
	}
	return out
}

// messageFrames returns the indexes of the message frames.
func (s *stream) messageFrames() []int {
	var idx []int
	for i, k := range s.kinds {
		if k == KindMessage || k == KindChained {
			idx = append(idx, i)
		}
	}
	return idx
}

// TestDropReorderReplay removes, swaps and repeats message frames.
func TestDropReorderReplay(t *testing.T) {
	for _, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			s := encodeStream(t, tc.mode, 8, tc.every)
			msgIdx := s.messageFrames()
			var cases []struct {
				name   string
				frames [][]byte
			}
			add := func(name string, frames [][]byte) {
				cases = append(cases, struct {
					name   string
					frames [][]byte
				}{name, frames})
			}
			// Dropping the last message is cutting the stream short, which
			// only the Chained mode's final checkpoint reveals.
			drops := msgIdx
			if tc.mode == PerMessage {
				drops = msgIdx[:len(msgIdx)-1]
			}
			for _, i := range drops {
				f := s.frameList()
				add(fmt.Sprintf("drop frame %d", i), append(f[:i:i], f[i+1:]...))
			}
			for j := 0; j+1 < len(msgIdx); j++ {
				f := s.frameList()
				a, b := msgIdx[j], msgIdx[j+1]
				f[a], f[b] = f[b], f[a]
				add(fmt.Sprintf("swap frames %d and %d", a, b), f)
			}
			for j, i := range msgIdx {
				for _, later := range msgIdx[j+1:] {
					f := s.frameList()
					replay := append([][]byte{}, f[:later+1]...)
					replay = append(replay, f[i])
					replay = append(replay, f[later+1:]...)
					add(fmt.Sprintf("replay frame %d after %d", i, later), replay)
				}
			}
			for _, c := range cases {
				r, v := verify(t, bytes.Join(c.frames, nil))
				if r.err == nil {
					t.Errorf("%s: not detected", c.name)
					continue
				}
				checkPrefix(t, r.msgs, s.msgs)
				if !strings.HasPrefix(c.name, "replay") && len(r.msgs) == len(s.msgs) {
					t.Errorf("%s: every message delivered", c.name)
				}
				if n := v.Stats().Rejected[ReasonOf(r.err)]; n != 1 {
					t.Errorf("%s: %v counted %d times", c.name, r.err, n)
				}
			}
		})
	}
}

func TestRejectReasons(t *testing.T) {
	pub := testKey().Public().(ed25519.PublicKey)
	other := ed25519.NewKeyFromSeed(make([]byte, 32))
	perMsg := encodeStream(t, PerMessage, 2, 0)
	chained := encodeStream(t, Chained, 2, 100)
	otherEnc, err := NewEncoder(other, PerMessage, EncoderOptions{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	otherStream, _, _ := otherEnc.Anchor(nil)
	otherStream, _, _ = otherEnc.Append(otherStream, message.Info, testNow, []byte("x"))

	tests := []struct {
		name string
		in   []byte
		opts VerifierOptions
		want error
	}{
		{"no anchor", perMsg.frameList()[1], VerifierOptions{}, ErrUnexpected},
		{"other key", otherStream, VerifierOptions{}, ErrBadSignature},
		{"text protocol", []byte("2024-07-06 02:19:04 hello\n"), VerifierOptions{}, ErrMalformed},
		{"oversized", append([]byte{Magic, byte(KindMessage)}, 0, 0x20, 0, 0), VerifierOptions{}, ErrOversized},
		{"max body", perMsg.bytes, VerifierOptions{MaxBody: 100}, ErrOversized},
		{"two anchors", append(bytes.Clone(perMsg.frameList()[0]), perMsg.frameList()[0]...), VerifierOptions{}, ErrUnexpected},
		{"upstream kind", append(bytes.Clone(perMsg.frameList()[0]), AppendAck(nil, 1)...), VerifierOptions{}, ErrUnexpected},
		{"clock ahead", perMsg.bytes, VerifierOptions{Now: func() time.Time { return testNow.Add(-time.Hour) }}, ErrTimestamp},
		{"clock behind", chained.bytes, VerifierOptions{Now: func() time.Time { return testNow.Add(time.Hour) }}, ErrTimestamp},
		{"window", perMsg.bytes, VerifierOptions{TimestampWindow: time.Nanosecond}, ErrTimestamp},
		{"pending overflow", chained.bytes, VerifierOptions{MaxPending: 1}, ErrPendingOverflow},
		{"pending bytes", chained.bytes, VerifierOptions{MaxPendingBytes: 10}, ErrPendingOverflow},
		{"truncated", perMsg.bytes[:len(perMsg.bytes)-1], VerifierOptions{}, ErrTruncated},
		{"uncovered", chained.bytes[:chained.frames[2][1]], VerifierOptions{}, ErrUncovered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Now == nil {
				tt.opts.Now = fixedNow
			}
			v, err := NewVerifier(pub, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			err = v.Feed(tt.in, func(*Message) {})
			if err == nil {
				err = v.Close()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			var re *RejectError
			if !errors.As(err, &re) || re.Error() == "" {
				t.Fatalf("error %T is not a *RejectError", err)
			}
			if again := v.Feed(nil, func(*Message) { t.Error("delivery after failure") }); again != err {
				t.Errorf("failure not sticky: %v", again)
			}
			if st := v.Stats(); st.Rejected[ReasonOf(err)] != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestJoinMidStream anchors a second client after messages were sent,
// some of them not yet covered: it verifies everything after its anchor.
func TestJoinMidStream(t *testing.T) {
	for _, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEncoder(t, tc.mode, 4)
			var first []byte
			first, _, _ = e.Anchor(first)
			for i := range 6 {
				first, _, _ = e.Append(first, message.Info, testNow, fmt.Appendf(nil, "early %d", i))
			}
			joined, _, err := e.Anchor(nil)
			if err != nil {
				t.Fatal(err)
			}
			var tail []byte
			for i := range 5 {
				tail, _, _ = e.Append(tail, message.Warning, testNow, fmt.Appendf(nil, "late %d", i))
			}
			tail = e.Checkpoint(tail)
			r, _ := verify(t, joined, tail)
			if r.err != nil || len(r.msgs) != 5 || r.msgs[0].seq != 7 || r.msgs[0].payload != "late 0" {
				t.Fatalf("joined client: %+v %v", r.msgs, r.err)
			}
			r, _ = verify(t, first, tail)
			if r.err != nil || len(r.msgs) != 11 {
				t.Fatalf("first client: %d messages, %v", len(r.msgs), r.err)
			}
			// A joined client given frames from before its anchor refuses them.
			r, _ = verify(t, joined, first[len(first)/2:])
			if r.err == nil {
				t.Error("frames from before the anchor accepted")
			}
		})
	}
}

// TestChainedPendingRelease checks that chained messages are delivered
// only once their checkpoint verifies, and that Checkpoint forces one.
func TestChainedPendingRelease(t *testing.T) {
	e, err := NewEncoder(testKey(), Chained, EncoderOptions{CheckpointInterval: time.Minute, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier(e.PublicKey(), VerifierOptions{Now: fixedNow})
	var got []uint64
	deliver := func(m *Message) { got = append(got, m.Seq) }
	a, _, _ := e.Anchor(nil)
	if err := v.Feed(a, deliver); err != nil {
		t.Fatal(err)
	}
	// The first message an interval after the last checkpoint gets one at once.
	b, _, _ := e.Append(nil, message.Info, testNow.Add(2*time.Minute), []byte("one"))
	if err := v.Feed(b, deliver); err != nil || len(got) != 1 {
		t.Fatalf("first message: %v %v", got, err)
	}
	for i := range 3 {
		b, _, _ = e.Append(b[:0], message.Info, testNow.Add(2*time.Minute), fmt.Appendf(nil, "m%d", i))
		if err := v.Feed(b, deliver); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 || v.Stats().Pending != 3 || e.Uncovered() != 3 {
		t.Fatalf("before checkpoint: delivered %v, pending %d, uncovered %d", got, v.Stats().Pending, e.Uncovered())
	}
	b = e.Checkpoint(b[:0])
	if e.Uncovered() != 0 || len(e.Checkpoint(nil)) != 0 {
		t.Error("checkpoint left messages uncovered, or a second one was made")
	}
	if err := v.Feed(b, deliver); err != nil || len(got) != 4 || v.Stats().Pending != 0 {
		t.Fatalf("after checkpoint: %v %v", got, err)
	}
}

func TestMaxAppendSize(t *testing.T) {
	for _, tc := range modes {
		e := newTestEncoder(t, tc.mode, 1)
		for _, n := range []int{0, 52, 4096} {
			b, _, err := e.Append(nil, message.Info, testNow, make([]byte, n))
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > MaxAppendSize(n) {
				t.Errorf("%s: Append of %d bytes made %d, over MaxAppendSize %d", tc.name, n, len(b), MaxAppendSize(n))
			}
		}
	}
}

func TestCheckpointInterval(t *testing.T) {
	e, err := NewEncoder(testKey(), Chained, EncoderOptions{CheckpointEvery: 1000, CheckpointInterval: 10 * time.Millisecond, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	count := func(b []byte) int {
		d := NewDecoder(0)
		d.Feed(b)
		n := 0
		for {
			f, ok, err := d.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				return n
			}
			if f.Kind == KindCheckpoint {
				n++
			}
		}
	}
	var b []byte
	for i := range 100 { // one message a millisecond for 100 ms
		b, _, _ = e.Append(b, message.Info, testNow.Add(time.Duration(i)*time.Millisecond), []byte("x"))
	}
	if n := count(b); n != 9 { // at 10, 20, ... 90 ms after NewEncoder
		t.Errorf("%d checkpoints in 100 ms at 10 ms, want 9", n)
	}
}

func TestResponseAndPong(t *testing.T) {
	e := newTestEncoder(t, Chained, 10)
	a, session, _ := e.Anchor(nil)
	req := Digest{1, 2, 3}
	resp, err := e.AppendResponse(nil, &Response{Session: session, Request: req, Type: message.Response, Time: testNow, Payload: []byte("Acknowledge: hi")})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier(e.PublicKey(), VerifierOptions{Now: fixedNow})
	var got []Message
	deliver := func(m *Message) { c := *m; c.Payload = bytes.Clone(m.Payload); got = append(got, c) }
	if err := v.Feed(append(append(a, resp...), AppendPong(nil, 42)...), deliver); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Kind != KindResponse || got[0].Request != req || string(got[0].Payload) != "Acknowledge: hi" ||
		got[1].Kind != KindPong || got[1].Seq != 42 {
		t.Fatalf("got %+v", got)
	}
	// The same response on another connection does not verify.
	a2, _, _ := e.Anchor(nil)
	v2, _ := NewVerifier(e.PublicKey(), VerifierOptions{Now: fixedNow})
	if err := v2.Feed(append(a2, resp...), func(*Message) {}); !errors.Is(err, ErrBadDigest) {
		t.Errorf("response on another session: %v", err)
	}
}

func TestEncoderErrors(t *testing.T) {
	if _, err := NewEncoder(testKey()[:10], PerMessage, EncoderOptions{}); err == nil {
		t.Error("short key accepted")
	}
	if _, err := NewEncoder(testKey(), 0, EncoderOptions{}); err == nil {
		t.Error("mode 0 accepted")
	}
	if _, err := NewVerifier(make(ed25519.PublicKey, 3), VerifierOptions{}); err == nil {
		t.Error("short public key accepted")
	}
	e := newTestEncoder(t, PerMessage, 0)
	dst := []byte("x")
	if out, _, err := e.Append(dst, 0, testNow, nil); !errors.Is(err, ErrInvalidMessage) || len(out) != 1 {
		t.Errorf("type 0: %v", err)
	}
	if out, _, err := e.Append(dst, message.Info, testNow, make([]byte, MaxPayload+1)); !errors.Is(err, ErrInvalidMessage) || len(out) != 1 {
		t.Errorf("oversized: %v", err)
	}
	if e.Seq() != 0 {
		t.Error("failed appends took sequence numbers")
	}
	a, _ := NewEncoder(testKey(), Chained, EncoderOptions{})
	b, _ := NewEncoder(testKey(), Chained, EncoderOptions{})
	if a.StreamID() == b.StreamID() || a.StreamID() == (StreamID{}) {
		t.Error("stream ids are not random")
	}
	for _, m := range []Mode{PerMessage, Chained} {
		if got, err := ParseMode(m.String()); got != m || err != nil {
			t.Errorf("ParseMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseMode("none"); err == nil {
		t.Error("ParseMode(none) accepted")
	}
}

// TestEncodeAllocs checks that encoding allocates nothing once dst is big
// enough.
func TestEncodeAllocs(t *testing.T) {
	payload := []byte("2024-07-06 02:19:04 WPEEo9bG5nnnS/tkKyiJMDf3LJJ3fiPE")
	for _, tc := range modes {
		e := newTestEncoder(t, tc.mode, 1000)
		dst := make([]byte, 0, 1<<20)
		allocs := testing.AllocsPerRun(1000, func() {
			var err error
			dst, _, err = e.Append(dst[:0], message.Info, testNow, payload)
			if err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per message", tc.name, allocs)
		}
	}
}

// TestVerifyAllocs checks that verifying a steady stream allocates nothing.
func TestVerifyAllocs(t *testing.T) {
	for _, tc := range modes {
		e := newTestEncoder(t, tc.mode, 10)
		a, _, _ := e.Anchor(nil)
		v, _ := NewVerifier(e.PublicKey(), VerifierOptions{Now: fixedNow})
		deliver := func(*Message) {}
		if err := v.Feed(a, deliver); err != nil {
			t.Fatal(err)
		}
		var frames [][]byte
		for range 1100 {
			b, _, _ := e.Append(nil, message.Info, testNow, []byte("2024-07-06 02:19:04 WPEEo9bG5nnnS/tkKyiJMDf3LJJ3fiPE"))
			frames = append(frames, b)
		}
		for _, f := range frames[:100] { // let the buffers grow
			if err := v.Feed(f, deliver); err != nil {
				t.Fatal(err)
			}
		}
		i := 100
		allocs := testing.AllocsPerRun(999, func() {
			if err := v.Feed(frames[i], deliver); err != nil {
				t.Fatal(err)
			}
			i++
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per message", tc.name, allocs)
		}
	}
}

// A listener that refuses a connection sends the text protocol's ERROR
// line; a client's decoder of the daemon's stream names it, whatever
// pieces it comes in, and takes anything else that is not a frame for a
// foreign stream. The daemon's decoder of a client's stream, where no
// refusal can come from, takes the line for a foreign stream too.
func TestDecoderRefusalLine(t *testing.T) {
	const refusal = "ERROR too many clients (max_clients 1); try again later\n"
	for _, step := range []int{1, 7, len(refusal)} {
		d := newDaemonDecoder(0)
		var err error
		for i := 0; i < len(refusal) && err == nil; i += step {
			d.Feed([]byte(refusal[i:min(i+step, len(refusal))]))
			var ok bool
			_, ok, err = d.Next()
			if ok {
				t.Fatal("a frame decoded from a text line")
			}
		}
		var re *RejectError
		if !errors.As(err, &re) || re.Reason != ReasonMalformed || !strings.Contains(err.Error(), `the server refused the connection: "ERROR too many clients (max_clients 1); try again later"`) {
			t.Errorf("fed %d bytes at a time: %v", step, err)
		}
	}
	for _, in := range []string{"ERRATIC\n", "HELLO\n", "ERROR " + strings.Repeat("x", 300)} {
		d := newDaemonDecoder(0)
		d.Feed([]byte(in))
		if _, _, err := d.Next(); err == nil || !strings.Contains(err.Error(), "not a chatty signed stream") {
			t.Errorf("%.20q: %v", in, err)
		}
	}
	up := NewDecoder(0)
	up.Feed([]byte(refusal))
	if _, _, err := up.Next(); err == nil || !strings.Contains(err.Error(), "not a chatty signed stream") {
		t.Errorf("the daemon's decoder of a client's stream: %v", err)
	}
	v, _ := NewVerifier(testKey().Public().(ed25519.PublicKey), VerifierOptions{Now: fixedNow})
	if err := v.Feed([]byte(refusal), nil); err == nil || !strings.Contains(err.Error(), "the server refused the connection") {
		t.Errorf("the verifier: %v", err)
	}
	// Only at the start: the same bytes later in a stream lost its place.
	s := encodeStream(t, PerMessage, 1, 1)
	d := newDaemonDecoder(0)
	d.Feed(append(slices.Clone(s.bytes), refusal...))
	for {
		_, ok, err := d.Next()
		if err != nil {
			if !strings.Contains(err.Error(), "not a chatty signed stream") {
				t.Errorf("after the frames: %v", err)
			}
			break
		}
		if !ok {
			t.Fatal("the text line after the frames was taken for a frame's beginning")
		}
	}
}
