package signed

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

const testStreamName = "k5vq3xwz2m7hd4ta"

// sessionOf returns the session of the stream's ANCHOR, its first frame.
func sessionOf(s *stream) Session {
	var sess Session
	copy(sess[:], s.bytes[HeaderSize+16:HeaderSize+32])
	return sess
}

// frameAfter returns the offset in s.bytes just after the frame of
// message seq (0: after the ANCHOR), and the frame index that follows.
func frameAfter(t testing.TB, s *stream, seq uint64) (int, int) {
	t.Helper()
	if seq == 0 {
		return s.frames[0][1], 1
	}
	n := uint64(0)
	for i, k := range s.kinds {
		if k == KindMessage || k == KindChained {
			if n++; n == seq {
				return s.frames[i][1], i + 1
			}
		}
	}
	t.Fatalf("no message %d", seq)
	return 0, 0
}

// resumedAt signs a RESUMED anchoring s's connection after message seq,
// with the chain digest found from the stream's start.
func resumedAt(t *testing.T, e *Encoder, s *stream, seq uint64, q ResumeRequest, res ResumeResult) []byte {
	t.Helper()
	end, _ := frameAfter(t, s, seq)
	head := ChainHeadAt(s.bytes[:end], Digest{})
	frame, err := e.AppendResumed(nil, Resumed{
		Anchor:  AnchorInfo{Session: sessionOf(s), Seq: seq, Head: head},
		Request: q,
		Result:  res,
		Stream:  testStreamName,
	})
	if err != nil {
		t.Fatal(err)
	}
	return frame
}

// verifyResumed feeds the pieces to a verifier that asked q first.
func verifyResumed(t *testing.T, q ResumeRequest, pieces ...[]byte) (result, *Verifier) {
	t.Helper()
	v, err := NewVerifier(testKey().Public().(ed25519.PublicKey), VerifierOptions{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	frame, err := v.Resume(q)
	if err != nil {
		t.Fatal(err)
	}
	f := decodeOne(t, frame, 0)
	if got, err := ParseResume(f); err != nil || got != q {
		t.Fatalf("RESUME frame reads as %+v %v, want %+v", got, err, q)
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

func fromSeq(seq uint64) ResumeRequest {
	return ResumeRequest{Nonce: [16]byte{1, 2, 3}, From: FromSeq, Seq: seq, Stream: testStreamName}
}

// A resumed connection, with or without the live start before its
// RESUMED, delivers exactly the messages from the one asked for, at
// every point of the stream, in both modes.
func TestResumeEveryPoint(t *testing.T) {
	for _, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			const n = 10
			s := encodeStream(t, tc.mode, n, tc.every)
			e := newTestEncoder(t, tc.mode, tc.every)
			for seq := uint64(1); seq <= n+1; seq++ {
				q := fromSeq(seq)
				resumed := resumedAt(t, e, s, seq-1, q, ResumedAsAsked)
				from, _ := frameAfter(t, s, seq-1)
				r, v := verifyResumed(t, q, resumed, s.bytes[from:])
				if r.err != nil {
					t.Fatalf("from %d: %v", seq, r.err)
				}
				if len(r.msgs) != n+1-int(seq) {
					t.Fatalf("from %d: %d messages, want %d", seq, len(r.msgs), n+1-int(seq))
				}
				checkPrefix(t, r.msgs, s.msgs[seq-1:])
				if got, ok := v.Resumed(); !ok || got.Result != ResumedAsAsked || got.Stream != testStreamName || got.Anchor.Seq != seq-1 {
					t.Fatalf("Resumed() = %+v %v", got, ok)
				}
				// The daemon started the connection live before the
				// RESUME came: what precedes the RESUMED is passed over.
				live := s.bytes[:s.frames[len(s.frames)/2][1]]
				r, v = verifyResumed(t, q, live, resumed, s.bytes[from:])
				if r.err != nil || len(r.msgs) != n+1-int(seq) {
					t.Fatalf("from %d after a live start: %d messages, %v", seq, len(r.msgs), r.err)
				}
				checkPrefix(t, r.msgs, s.msgs[seq-1:])
				if v.Stats().Skipped == 0 {
					t.Fatal("no frame counted as skipped before the RESUMED")
				}
			}
		})
	}
}

// A gap is told, signed: the messages no longer held are named, and the
// stream goes on from the oldest held.
func TestResumeGap(t *testing.T) {
	for _, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			s := encodeStream(t, tc.mode, 8, tc.every)
			e := newTestEncoder(t, tc.mode, tc.every)
			q := fromSeq(2)
			from, _ := frameAfter(t, s, 5)
			r, v := verifyResumed(t, q, resumedAt(t, e, s, 5, q, ResumedGap), s.bytes[from:])
			if r.err != nil || len(r.msgs) != 3 || r.msgs[0].seq != 6 {
				t.Fatalf("%+v %v", r.msgs, r.err)
			}
			res, _ := v.Resumed()
			if g1, g2, ok := res.Gap(); !ok || g1 != 2 || g2 != 5 {
				t.Fatalf("gap %d-%d %v, want 2-5", g1, g2, ok)
			}
		})
	}
}

// A RESUMED that does not answer this connection's request, or claims a
// start it does not have, is rejected and nothing after it delivered.
func TestResumeRejections(t *testing.T) {
	s := encodeStream(t, Chained, 6, 2)
	e := newTestEncoder(t, Chained, 2)
	from3, _ := frameAfter(t, s, 3)
	anyReq := ResumeRequest{Nonce: [16]byte{9}, From: FromFirst}
	wrongHead, err := e.AppendResumed(nil, Resumed{Anchor: AnchorInfo{Session: sessionOf(s), Seq: 3}, Request: fromSeq(4), Result: ResumedAsAsked, Stream: testStreamName})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		q      ResumeRequest
		pieces [][]byte
		reason Reason
	}{
		{"as asked but later", fromSeq(2), [][]byte{resumedAt(t, e, s, 3, fromSeq(2), ResumedAsAsked), s.bytes[from3:]}, ReasonUnexpected},
		{"gap for a start as asked", fromSeq(4), [][]byte{resumedAt(t, e, s, 3, fromSeq(4), ResumedGap), s.bytes[from3:]}, ReasonUnexpected},
		{"other nonce", fromSeq(4), [][]byte{resumedAt(t, e, s, 3, ResumeRequest{Nonce: [16]byte{7}, From: FromSeq, Seq: 4, Stream: testStreamName}, ResumedAsAsked)}, ReasonUnexpected},
		{"other stream to any", anyReq, [][]byte{resumedAt(t, e, s, 3, anyReq, ResumedOtherStream)}, ReasonUnexpected},
		{"wrong head", fromSeq(4), [][]byte{wrongHead, s.bytes[from3:]}, ReasonBadChain},
		{"never answered", fromSeq(4), [][]byte{s.bytes}, ReasonTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, _ := verifyResumed(t, c.q, c.pieces...)
			if len(r.msgs) != 0 || ReasonOf(r.err) != c.reason {
				t.Fatalf("delivered %d, err %v; want %v", len(r.msgs), r.err, c.reason)
			}
		})
	}
	// A RESUMED no RESUME asked for.
	r, _ := verify(t, resumedAt(t, e, s, 3, fromSeq(4), ResumedAsAsked), s.bytes[from3:])
	if ReasonOf(r.err) != ReasonUnexpected || len(r.msgs) != 0 {
		t.Fatalf("unrequested RESUMED: %d delivered, %v", len(r.msgs), r.err)
	}
	// Every byte of a RESUMED is covered.
	q := fromSeq(4)
	resumed := resumedAt(t, e, s, 3, q, ResumedAsAsked)
	for i := range resumed {
		bad := bytes.Clone(resumed)
		bad[i] ^= 0x01
		r, _ := verifyResumed(t, q, bad, s.bytes[from3:])
		if r.err == nil || len(r.msgs) != 0 {
			t.Fatalf("byte %d flipped: %d delivered, %v", i, len(r.msgs), r.err)
		}
	}
	// One resume per connection, and only before anything is delivered.
	v, _ := NewVerifier(testKey().Public().(ed25519.PublicKey), VerifierOptions{Now: fixedNow})
	if _, err := v.Resume(q); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Resume(q); err == nil {
		t.Fatal("second Resume accepted")
	}
	if _, v = verify(t, s.bytes); v.Stats().Verified == 0 {
		t.Fatal("nothing verified")
	}
	if _, err := v.Resume(q); err == nil {
		t.Fatal("Resume after a delivery accepted")
	}
}

// A RESUME that asks nothing sensible is refused on both sides, naming
// what is wrong.
func TestResumeRequestErrors(t *testing.T) {
	good, err := AppendResume(nil, fromSeq(3))
	if err != nil {
		t.Fatal(err)
	}
	body := good[HeaderSize:]
	for _, c := range []struct {
		name string
		q    ResumeRequest
		want string
	}{
		{"no from", ResumeRequest{}, "want 1 (seq)"},
		{"from 5", ResumeRequest{From: 5}, "want 1 (seq)"},
		{"since 1970", ResumeRequest{From: FromSince}, "after 1970"},
		{"seq 0", ResumeRequest{From: FromSeq, Stream: "x"}, "start at 1"},
		{"seq with first", ResumeRequest{From: FromFirst, Seq: 3}, "only from seq"},
		{"space in name", ResumeRequest{From: FromNext, Stream: "a b"}, "not a letter"},
		{"long name", ResumeRequest{From: FromNext, Stream: string(bytes.Repeat([]byte("a"), 65))}, "more than 64"},
	} {
		if _, err := AppendResume(nil, c.q); err == nil || !errors.Is(err, ErrInvalidResume) || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%s: AppendResume: %v, want %q", c.name, err, c.want)
		}
		frame := appendHeader(nil, KindResume, resumeFixed+len(c.q.Stream))
		frame = append(frame, c.q.Nonce[:]...)
		frame = append(append(frame, byte(c.q.From)), make([]byte, 8)...)
		putU64(frame[len(frame)-8:], c.q.Seq)
		frame = append(append(frame, byte(len(c.q.Stream))), c.q.Stream...)
		if _, err := ParseResume(decodeOne(t, frame, 0)); ReasonOf(err) != ReasonMalformed || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%s: ParseResume: %v, want malformed %q", c.name, err, c.want)
		}
	}
	for _, q := range []ResumeRequest{
		{From: FromSince, Seq: 3, Since: testNow},
		{From: FromSeq, Seq: 3, Since: testNow},
		{From: FromNext, Since: testNow},
	} {
		if _, err := AppendResume(nil, q); !errors.Is(err, ErrInvalidResume) {
			t.Errorf("%+v: AppendResume: %v, want invalid", q, err)
		}
	}
	for _, n := range []int{0, resumeFixed - 1, len(body) - 1, len(body) + 1} {
		b := append(bytes.Clone(body), 'x')[:n]
		if _, err := ParseResume(Frame{Kind: KindResume, Body: b}); ReasonOf(err) != ReasonMalformed {
			t.Errorf("body of %d bytes: %v, want malformed", n, err)
		}
	}
	if _, err := ParseResume(Frame{Kind: KindAck, Body: body}); ReasonOf(err) != ReasonUnexpected {
		t.Errorf("an ACK read as a RESUME: %v", err)
	}
}

func putU64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

// ChainHeadAt finds the digest after the last chained message, passing
// over checkpoints, from a block's start digest.
func TestChainHeadAt(t *testing.T) {
	s := encodeStream(t, Chained, 5, 2)
	e := newTestEncoder(t, Chained, 2)
	var all []byte
	all, _, _ = e.Anchor(all)
	for i, m := range s.msgs {
		all, _, _ = e.Append(all, m.typ, m.ts, []byte(m.payload))
		if got, want := ChainHeadAt(all, Digest{}), e.Head(); got != want {
			t.Fatalf("after message %d: %s, want %s", i+1, got, want)
		}
		mid := e.Head()
		if got := ChainHeadAt(nil, mid); got != mid {
			t.Fatal("an empty block changes the start digest")
		}
	}
	if fmt.Sprint(ChainHeadAt(all[:3], Digest{1})) != fmt.Sprint(Digest{1}) {
		t.Fatal("a cut header changes the digest")
	}
}

// A RESUME from a time carries it where the seq goes, and the RESUMED
// must repeat it.
func TestResumeSince(t *testing.T) {
	s := encodeStream(t, Chained, 6, 2)
	e := newTestEncoder(t, Chained, 2)
	q := ResumeRequest{Nonce: [16]byte{4}, From: FromSince, Since: time.Unix(0, testNow.UnixNano())}
	frame, err := AppendResume(nil, q)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParseResume(decodeOne(t, frame, 0)); err != nil || !got.Since.Equal(q.Since) || got.From != FromSince || got.Seq != 0 {
		t.Fatalf("RESUME from since reads as %+v %v", got, err)
	}
	from, _ := frameAfter(t, s, 2)
	r, _ := verifyResumed(t, q, resumedAt(t, e, s, 2, q, ResumedAsAsked), s.bytes[from:])
	if r.err != nil || len(r.msgs) != 4 || r.msgs[0].seq != 3 {
		t.Fatalf("%+v %v", r.msgs, r.err)
	}
	other := q
	other.Since = q.Since.Add(time.Nanosecond)
	r, _ = verifyResumed(t, q, resumedAt(t, e, s, 2, other, ResumedAsAsked), s.bytes[from:])
	if ReasonOf(r.err) != ReasonUnexpected || len(r.msgs) != 0 {
		t.Fatalf("a RESUMED of another time: %d delivered, %v", len(r.msgs), r.err)
	}
}

// SkipTo numbers the next message as told: an ANCHOR after it says so,
// and a client verifying across the jump is told messages are missing.
func TestEncoderSkipTo(t *testing.T) {
	e := newTestEncoder(t, Chained, 100)
	before, _, _ := e.Anchor(nil)
	before, _, _ = e.Append(before, message.Info, testNow, []byte("one"))
	if err := e.SkipTo(50); err == nil {
		t.Fatal("skip with an uncovered message accepted")
	}
	before = e.Checkpoint(before)
	if err := e.SkipTo(1); err == nil {
		t.Fatal("skip backwards accepted")
	}
	if err := e.SkipTo(50); err != nil {
		t.Fatal(err)
	}
	anchor, _, _ := e.Anchor(nil)
	var after []byte
	after, seq, _ := e.Append(after, message.Info, testNow, []byte("fifty"))
	after = e.Checkpoint(after)
	if seq != 50 {
		t.Fatalf("the message after the skip is seq %d, want 50", seq)
	}
	if r, _ := verify(t, anchor, after); r.err != nil || len(r.msgs) != 1 || r.msgs[0].seq != 50 {
		t.Fatalf("joined after the skip: %+v %v", r.msgs, r.err)
	}
	if r, _ := verify(t, before, after); ReasonOf(r.err) != ReasonGap || len(r.msgs) != 1 {
		t.Fatalf("across the skip: %+v %v, want message 1 then a gap", r.msgs, r.err)
	}
}
