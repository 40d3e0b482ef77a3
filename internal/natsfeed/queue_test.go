package natsfeed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// BenchmarkPublishQueued is the publisher's own cost for a feed that
// comes faster than the stream takes it: Publish queues calls of 1 or
// 256 lines behind a backlog of depth lines, and take cuts batches of
// the default size off the front. An op is one line.
func BenchmarkPublishQueued(b *testing.B) {
	for _, call := range []int{1, 256} {
		for _, depth := range []int{10_000, 1_000_000} {
			b.Run(fmt.Sprintf("call-%d/backlog-%d", call, depth), func(b *testing.B) {
				log := logrus.New()
				log.SetOutput(io.Discard)
				p := newPublisher(nil, nil, nil, PublisherOptions{BufferBytes: 1 << 40, BatchLines: 8192, BatchBytes: 1044480}, logrus.NewEntry(log))
				lines := make([][]byte, call)
				for i := range lines {
					lines[i] = []byte("2026-12-07 09:00:00.000 3q2+7w8KpUL5lWJ0Ybq7uA==")
				}
				ctx := context.Background()
				queued := 0
				for queued < depth {
					if err := p.Publish(ctx, lines); err != nil {
						b.Fatal(err)
					}
					queued += call
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i += call {
					if err := p.Publish(ctx, lines); err != nil {
						b.Fatal(err)
					}
					queued += call
					for queued > depth {
						t := p.take()
						queued -= len(t.lines)
						p.release(t.bytes)
					}
				}
			})
		}
	}
}

// TestLineQueue adds calls of random sizes, few lines and many, and
// takes batches of random limits. Each batch is what a greedy cut of
// the lines queued gives: as many lines as fit in both limits, and a
// first line over maxBytes alone. Every line comes out once, in order,
// and no batch changes when lines are added after it was taken.
func TestLineQueue(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var q lineQueue
	var in, pending [][]byte // every line added; those not yet taken
	var batches [][][]byte
	next := 0
	for round := range 3000 {
		if rng.IntN(3) > 0 {
			n := rng.IntN(8)
			if rng.IntN(10) == 0 {
				n = sharedChunk + rng.IntN(400) // a call with a chunk of its own
			}
			call := make([][]byte, n)
			var arena []byte
			for i := range call {
				call[i] = []byte(strings.Repeat("x", rng.IntN(30)) + strconv.Itoa(next))
				arena = append(arena, call[i]...)
				next++
			}
			q.add(arena, call)
			in = append(in, call...)
			pending = append(pending, call...)
		}
		maxLines, maxBytes := 1+rng.IntN(300), 1+rng.IntN(4000)
		want, wantSize := 0, 0
		for want < len(pending) && want < maxLines {
			l := len(pending[want]) + 1
			if want > 0 && wantSize+l > maxBytes {
				break
			}
			wantSize += l
			want++
		}
		lines, size := q.take(maxLines, maxBytes)
		if len(lines) != want || size != wantSize {
			t.Fatalf("round %d: took %d lines of %d bytes, want %d of %d (limits %d, %d)", round, len(lines), size, want, wantSize, maxLines, maxBytes)
		}
		if cap(lines) != len(lines) {
			t.Fatalf("round %d: a batch of %d lines has capacity %d: appending to it would overwrite lines queued after it", round, len(lines), cap(lines))
		}
		for i := range lines {
			if !bytes.Equal(lines[i], pending[i]) {
				t.Fatalf("round %d: line %d of the batch is %q, want %q", round, i, lines[i], pending[i])
			}
		}
		pending = pending[want:]
		if q.len() != len(pending) {
			t.Fatalf("round %d: len %d, want %d", round, q.len(), len(pending))
		}
		if len(lines) > 0 {
			batches = append(batches, lines)
		}
	}
	for q.len() > 0 {
		lines, _ := q.take(1000, 1<<20)
		batches = append(batches, lines)
	}
	var out [][]byte
	for _, b := range batches {
		out = append(out, b...)
	}
	if len(out) != len(in) {
		t.Fatalf("%d lines out, %d in", len(out), len(in))
	}
	for i := range in {
		if !bytes.Equal(in[i], out[i]) {
			t.Fatalf("line %d as its batch holds it now: %q, want %q", i, out[i], in[i])
		}
	}
	if lines, size := q.take(10, 10); lines != nil || size != 0 {
		t.Fatalf("take from an empty queue: %d lines, %d bytes", len(lines), size)
	}
}
