package worker

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
)

// referenceAcks is the obvious, buffering version of acker.feed over a whole
// stream: the acks of every complete line up to the first one over max, and
// whether the stream is in error (a line, or the unfinished tail, over max).
func referenceAcks(data []byte, max int) (acks []byte, kaa int, tooLong bool) {
	lines := bytes.Split(data, []byte("\n"))
	tail := lines[len(lines)-1]
	for _, line := range lines[:len(lines)-1] {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > max {
			return acks, kaa, true
		}
		if string(line) == "KEEP_ALIVE_ACK" {
			kaa++
			continue
		}
		acks = append(acks, "ACK_RECEIVED "+strconv.Itoa(len(line))+"\n"...)
	}
	return acks, kaa, len(bytes.TrimSuffix(tail, []byte("\r"))) > max
}

// feedSplit feeds data to a fresh acker in pieces cut by rng, as the
// network might deliver it.
func feedSplit(data []byte, max int, rng *rand.Rand) (acks []byte, kaa int, err error) {
	a := acker{max: max}
	for len(data) > 0 && err == nil {
		n := 1 + rng.IntN(len(data))
		var k int
		acks, k, err = a.feed(acks, data[:n])
		kaa += k
		data = data[n:]
	}
	return acks, kaa, err
}

func TestAcker(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
		kaa      int
		tooLong  bool
	}{
		{name: "plain", in: "hello\n", max: 100, want: "ACK_RECEIVED 5\n"},
		{name: "crlf", in: "hello\r\n", max: 100, want: "ACK_RECEIVED 5\n"},
		{name: "empty lines", in: "\n\r\n", max: 100, want: "ACK_RECEIVED 0\nACK_RECEIVED 0\n"},
		{name: "keep-alive ack", in: "KEEP_ALIVE_ACK\nKEEP_ALIVE_ACK\r\n", max: 100, kaa: 2},
		{name: "near keep-alive ack", in: "KEEP_ALIVE_AC\nKEEP_ALIVE_ACKK\n", max: 100, want: "ACK_RECEIVED 13\nACK_RECEIVED 15\n"},
		{name: "unfinished line", in: "abc", max: 100},
		{name: "at the limit", in: "abcd\r\n", max: 4, want: "ACK_RECEIVED 4\n"},
		{name: "over the limit", in: "ok\nabcde\n", max: 4, want: "ACK_RECEIVED 2\n", tooLong: true},
		{name: "unfinished over the limit", in: "abcde", max: 4, tooLong: true},
		{name: "unfinished at the limit with cr", in: "abcd\r", max: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for seed := range uint64(20) {
				acks, kaa, err := feedSplit([]byte(tt.in), tt.max, rand.New(rand.NewPCG(seed, 1)))
				if string(acks) != tt.want || kaa != tt.kaa || errors.Is(err, ErrLineTooLong) != tt.tooLong {
					t.Fatalf("seed %d: got %q, %d keep-alive acks, err %v; want %q, %d, too long %v",
						seed, acks, kaa, err, tt.want, tt.kaa, tt.tooLong)
				}
			}
		})
	}
}

// FuzzAcker checks acker against referenceAcks with the input split at
// arbitrary positions.
func FuzzAcker(f *testing.F) {
	f.Add([]byte("2024-07-06 02:19:04 WPEEo9bG5nnnS/tkKyiJMDf3LJJ3fiPE\n"), uint64(1))
	f.Add([]byte("KEEP_ALIVE_ACK\r\nab\r\n\n"), uint64(2))
	f.Add([]byte("KEEP_ALIVE_ACK\r\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), uint64(3))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		if len(data) > 1<<16 {
			return
		}
		const max = 32
		want, wantKAA, wantTooLong := referenceAcks(data, max)
		got, kaa, err := feedSplit(data, max, rand.New(rand.NewPCG(seed, seed>>7)))
		if err != nil && !errors.Is(err, ErrLineTooLong) {
			t.Fatalf("unexpected error %v", err)
		}
		if !bytes.Equal(got, want) || kaa != wantKAA || (err != nil) != wantTooLong {
			t.Fatalf("input %q: got %q, %d, %v; want %q, %d, too long %v", data, got, kaa, err, want, wantKAA, wantTooLong)
		}
	})
}

func BenchmarkAcker(b *testing.B) {
	chunk := bytes.Repeat([]byte("2024-07-06 02:19:04 WPEEo9bG5nnnS/tkKyiJMDf3LJJ3fiPE\n"), 4096)
	a := acker{max: MaxLineBytes}
	var out []byte
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		out, _, _ = a.feed(out[:0], chunk)
	}
}
