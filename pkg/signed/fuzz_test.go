package signed

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/chatty-dev/chatty/pkg/message"
)

// decodeAll decodes data fed in pieces cut at the given points and returns
// the frames (copied) and the error that stopped it. fromDaemon decodes it
// as a client reads the daemon's stream (newDaemonDecoder).
func decodeAll(data []byte, cuts []int, maxBody int, fromDaemon bool) ([]Frame, error) {
	d := NewDecoder(maxBody)
	if fromDaemon {
		d = newDaemonDecoder(maxBody)
	}
	var frames []Frame
	prev := 0
	cuts = append(cuts, len(data))
	for _, c := range cuts {
		if c < prev || c > len(data) {
			continue
		}
		d.Feed(data[prev:c])
		prev = c
		for {
			f, ok, err := d.Next()
			if err != nil {
				return frames, err
			}
			if !ok {
				break
			}
			if len(f.Body) > maxBody {
				panic("frame over the limit")
			}
			f.Body = bytes.Clone(f.Body)
			frames = append(frames, f)
		}
	}
	return frames, nil
}

// FuzzDecoder checks that the decoder, of either side's stream, never
// panics, never returns a body over its limit, and finds the same frames
// and the same error however the input is split.
func FuzzDecoder(f *testing.F) {
	s := encodeStream(f, Chained, 3, 2)
	f.Add(s.bytes, uint16(7), uint16(100))
	f.Add(encodeStream(f, PerMessage, 2, 0).bytes, uint16(1), uint16(0))
	f.Add([]byte{Magic, byte(KindAck), 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}, uint16(3), uint16(2))
	f.Add([]byte{Magic, 0x7f, 0xff, 0xff, 0xff, 0xff}, uint16(1), uint16(1))
	f.Add([]byte("KEEP_ALIVE\n"), uint16(0), uint16(0))
	f.Add([]byte("ERROR too many clients (max_clients 1); try again later\n"), uint16(3), uint16(30))
	f.Add([]byte("ERROR "+strings.Repeat("x", 260)+"\n"), uint16(6), uint16(255))
	const maxBody = 4096
	f.Fuzz(func(t *testing.T, data []byte, a, b uint16) {
		cuts := []int{int(a) % (len(data) + 1), int(b) % (len(data) + 1)}
		if cuts[0] > cuts[1] {
			cuts[0], cuts[1] = cuts[1], cuts[0]
		}
		for _, fromDaemon := range []bool{false, true} {
			whole, wholeErr := decodeAll(data, nil, maxBody, fromDaemon)
			split, splitErr := decodeAll(data, cuts, maxBody, fromDaemon)
			if len(whole) != len(split) || fmt.Sprint(wholeErr) != fmt.Sprint(splitErr) {
				t.Fatalf("from the daemon %v: whole: %d frames, %v; split at %v: %d frames, %v", fromDaemon, len(whole), wholeErr, cuts, len(split), splitErr)
			}
			for i := range whole {
				if whole[i].Kind != split[i].Kind || whole[i].Offset != split[i].Offset || !bytes.Equal(whole[i].Body, split[i].Body) {
					t.Fatalf("from the daemon %v: frame %d differs when split", fromDaemon, i)
				}
			}
		}
	})
}

// FuzzVerifier checks that any stream, split anywhere, verifies the same
// way without panicking, and that what it delivers was really sent.
func FuzzVerifier(f *testing.F) {
	per := encodeStream(f, PerMessage, 3, 0)
	chained := encodeStream(f, Chained, 5, 2)
	f.Add(per.bytes, uint16(40))
	f.Add(chained.bytes, uint16(200))
	f.Add(chained.bytes[:len(chained.bytes)-3], uint16(10))
	sentPayloads := map[string]bool{}
	for _, s := range []*stream{per, chained} {
		for _, m := range s.msgs {
			sentPayloads[m.payload] = true
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		c := int(cut) % (len(data) + 1)
		whole, _ := verify(t, data)
		split, _ := verify(t, data[:c], data[c:])
		if len(whole.msgs) != len(split.msgs) || ReasonOf(whole.err) != ReasonOf(split.err) {
			t.Fatalf("whole: %d messages, %v; split at %d: %d, %v", len(whole.msgs), whole.err, c, len(split.msgs), split.err)
		}
		for _, m := range whole.msgs {
			if !sentPayloads[m.payload] {
				t.Fatalf("delivered a message never signed: %+v", m)
			}
		}
	})
}

// FuzzUpstream feeds arbitrary client streams to the daemon's side: no
// panics, and nothing accepted that the client did not sign.
func FuzzUpstream(f *testing.F) {
	c, _, e := upstreamSetup(f)
	var seed []byte
	seed, _, _ = c.Append(seed, message.Request, testNow, []byte("hello"))
	seed = AppendAck(seed, 3)
	seed = AppendPing(seed, 4)
	seed, _, _ = c.Append(seed, message.Info, testNow, []byte("world"))
	f.Add(seed, uint16(30))
	f.Add(seed[:50], uint16(0))
	f.Add([]byte{Magic, byte(KindClientMessage), 0, 0, 0, 0}, uint16(3))
	pub := clientPriv.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		u := NewUpstreamVerifier(keySet{pub}, e.StreamID(), c.session, UpstreamOptions{Now: fixedNow})
		d := NewDecoder(u.MaxBody())
		k := int(cut) % (len(data) + 1)
		var lastSeq uint64
		for _, p := range [][]byte{data[:k], data[k:]} {
			d.Feed(p)
			for {
				fr, ok, err := d.Next()
				if err != nil || !ok {
					break
				}
				up, err := u.Verify(fr)
				if err != nil {
					var re *RejectError
					if !errors.As(err, &re) {
						t.Fatalf("error %T", err)
					}
					continue
				}
				if up.Kind == KindClientMessage {
					if p := string(up.Payload); p != "hello" && p != "world" {
						t.Fatalf("accepted a message never signed: %q", p)
					}
					if up.Seq <= lastSeq {
						t.Fatalf("accepted seq %d after %d", up.Seq, lastSeq)
					}
					lastSeq = up.Seq
				}
			}
		}
	})
}

// FuzzResume reads arbitrary RESUME bodies as the daemon does: no
// panics, a clear rejection or a request that encodes back to the same
// bytes.
func FuzzResume(f *testing.F) {
	for _, q := range []ResumeRequest{fromSeq(7), {From: FromFirst}, {Nonce: [16]byte{5}, From: FromNext, Stream: testStreamName}} {
		frame, err := AppendResume(nil, q)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame[HeaderSize:])
	}
	f.Add(make([]byte, resumeFixed))
	f.Fuzz(func(t *testing.T, body []byte) {
		q, err := ParseResume(Frame{Kind: KindResume, Body: body})
		if err != nil {
			if ReasonOf(err) != ReasonMalformed {
				t.Fatalf("rejected as %v: %v", ReasonOf(err), err)
			}
			return
		}
		frame, err := AppendResume(nil, q)
		if err != nil || !bytes.Equal(frame[HeaderSize:], body) {
			t.Fatalf("accepted %+v, which encodes as %x (%v), not %x", q, frame, err, body)
		}
	})
}

// FuzzResumed feeds arbitrary streams to a client awaiting its RESUMED:
// no panics, the same answer however the stream is split, and a RESUMED
// that verifies is byte for byte the one the daemon signed.
func FuzzResumed(f *testing.F) {
	s := encodeStream(f, Chained, 5, 2)
	e := newTestEncoder(f, Chained, 2)
	q := fromSeq(3)
	from, _ := frameAfter(f, s, 2)
	resumed, err := e.AppendResumed(nil, Resumed{Anchor: AnchorInfo{Session: sessionOf(s), Seq: 2, Head: ChainHeadAt(s.bytes[:from], Digest{})},
		Request: q, Result: ResumedAsAsked, Stream: testStreamName})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append(bytes.Clone(resumed), s.bytes[from:]...), uint16(50))
	f.Add(append(bytes.Clone(s.bytes[:from]), resumed...), uint16(7))
	f.Add(resumed[:100], uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		c := int(cut) % (len(data) + 1)
		var got [2][]byte
		var errs [2]error
		for i, pieces := range [][][]byte{{data}, {data[:c], data[c:]}} {
			v, _ := NewVerifier(testKey().Public().(ed25519.PublicKey), VerifierOptions{Now: fixedNow})
			if _, err := v.Resume(q); err != nil {
				t.Fatal(err)
			}
			for _, p := range pieces {
				if errs[i] = v.Feed(p, func(m *Message) {
					got[i] = append(got[i], fmt.Sprintf("%v %d %s;", m.Kind, m.Seq, m.Payload)...)
				}); errs[i] != nil {
					break
				}
			}
			if r, ok := v.Resumed(); ok && (r.Anchor.Seq != 2 || r.Stream != testStreamName || r.Result != ResumedAsAsked) {
				t.Fatalf("verified a RESUMED never signed: %+v", r)
			}
		}
		if !bytes.Equal(got[0], got[1]) || ReasonOf(errs[0]) != ReasonOf(errs[1]) {
			t.Fatalf("whole: %s %v; split at %d: %s %v", got[0], errs[0], c, got[1], errs[1])
		}
	})
}
