package broadcast

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// maskedFrame is a client's frame of opcode with payload, masked with key.
func maskedFrame(fin bool, opcode byte, payload []byte, key [4]byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = binary.BigEndian.AppendUint16(append(f, 0x80|126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 0x80|127), uint64(n))
	}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i&3])
	}
	return f
}

// A stream of client frames parses the same however it is split: a
// prefix yields whole frames only, and the rest once it is there.
func TestParseWSFrameSplitAnywhere(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	frames := [][]byte{
		maskedFrame(true, wsPing, []byte("hi"), key),
		maskedFrame(false, wsText, bytes.Repeat([]byte("a"), 130), key),
		maskedFrame(true, wsContinuation, []byte("end"), key),
		maskedFrame(true, wsPong, nil, key),
		maskedFrame(true, wsClose, []byte{0x03, 0xe8}, key),
	}
	stream := bytes.Join(frames, nil)
	for split := 0; split <= len(stream); split++ {
		buf := append([]byte(nil), stream[:split]...)
		var got []wsFrame
		used := 0
		parse := func() {
			for {
				f, n, err := parseWSFrame(buf[used:], 4096)
				if err != nil {
					t.Fatalf("split %d: %v", split, err)
				}
				if n == 0 {
					return
				}
				f.payload = append([]byte(nil), f.payload...)
				got = append(got, f)
				used += n
			}
		}
		parse()
		buf = append(buf, stream[split:]...)
		parse()
		if used != len(stream) || len(got) != len(frames) {
			t.Fatalf("split %d: %d frames from %d bytes, want %d from %d", split, len(got), used, len(frames), len(stream))
		}
		if got[0].opcode != wsPing || string(got[0].payload) != "hi" || got[1].fin || len(got[1].payload) != 130 ||
			got[1].payload[0] != 'a' || string(got[2].payload) != "end" || got[4].opcode != wsClose {
			t.Fatalf("split %d: frames %+v", split, got)
		}
	}
}

func TestParseWSFrameRefuses(t *testing.T) {
	key := [4]byte{9, 9, 9, 9}
	unmasked := []byte{0x81, 0x02, 'h', 'i'}
	for _, tc := range []struct {
		name  string
		frame []byte
		code  int
	}{
		{"unmasked", unmasked, wsProtocolError},
		{"reserved bit", append([]byte{0xc1}, maskedFrame(true, wsText, nil, key)[1:]...), wsProtocolError},
		{"unknown opcode", maskedFrame(true, 0x3, nil, key), wsProtocolError},
		{"fragmented ping", maskedFrame(false, wsPing, nil, key), wsProtocolError},
		{"long ping", maskedFrame(true, wsPing, make([]byte, 126), key), wsProtocolError},
		{"too big", maskedFrame(true, wsText, make([]byte, 101), key)[:8], wsTooBig},
		{"64-bit top bit", []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, wsProtocolError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseWSFrame(tc.frame, 100)
			var we *wsError
			if !errors.As(err, &we) || we.code != tc.code {
				t.Fatalf("err %v, want close code %d", err, tc.code)
			}
		})
	}
}

// The codec's skip finds the frame after n lines whatever their sizes,
// passing over the server's own messages.
func TestWSCodecSkip(t *testing.T) {
	// want[n] is the offset after the nth line: a server message
	// after it is the next line's to read.
	buf := []byte{}
	want := []int{0}
	lines := [][]byte{[]byte("a"), bytes.Repeat([]byte("b"), 200), bytes.Repeat([]byte("c"), 70000), {0xff}, nil}
	for i, l := range lines {
		buf, _ = wsCodec{}.encodeLocked(buf, l, uint64(i+1))
		want = append(want, len(buf))
		if i == 1 {
			buf = appendWSFrame(buf, wsText, []byte("{\"gap\":{\"from\":3,\"to\":4}}\n"))
		}
	}
	for n, w := range want {
		if got := (wsCodec{}).skip(buf, uint64(n)); got != w {
			t.Errorf("skip(%d) = %d, want %d", n, got, w)
		}
	}
}

func FuzzParseWSFrame(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(maskedFrame(true, wsText, []byte("hello"), key))
	f.Add(maskedFrame(true, wsPing, nil, key))
	f.Add(maskedFrame(false, wsBinary, make([]byte, 300), key))
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0x10, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		in := append([]byte(nil), p...)
		fr, n, err := parseWSFrame(in, 4096)
		if err != nil {
			if n != 0 {
				t.Fatalf("error with %d bytes used", n)
			}
			return
		}
		if n > len(p) || len(fr.payload) > 4096 || (n > 0 && n < len(fr.payload)+6) {
			t.Fatalf("n %d of %d bytes, payload %d", n, len(p), len(fr.payload))
		}
		if n == 0 {
			return
		}
		// Masking the payload again gives the bytes read.
		hdr := n - len(fr.payload)
		mask := p[hdr-4 : hdr]
		for i, c := range fr.payload {
			if c^mask[i&3] != p[hdr+i] {
				t.Fatalf("payload byte %d not unmasked", i)
			}
		}
	})
}
