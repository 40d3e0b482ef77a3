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
// comes faster than the stream takes it: Publish queues chunks of 256
// lines behind a backlog of depth lines, and take cuts batches of the
// default size off the front. An op is one line.
func BenchmarkPublishQueued(b *testing.B) {
	for _, depth := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("backlog-%d", depth), func(b *testing.B) {
			log := logrus.New()
			log.SetOutput(io.Discard)
			p := newPublisher(nil, nil, nil, PublisherOptions{BufferBytes: 1 << 40, BatchLines: 8192, BatchBytes: 1044480}, logrus.NewEntry(log))
			chunk := make([][]byte, 256)
			for i := range chunk {
				chunk[i] = []byte("2026-12-07 09:00:00.000 3q2+7w8KpUL5lWJ0Ybq7uA==")
			}
			ctx := context.Background()
			queued := 0
			fill := func() {
				for queued < depth {
					if err := p.Publish(ctx, chunk); err != nil {
						b.Fatal(err)
					}
					queued += len(chunk)
				}
			}
			fill()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += len(chunk) {
				if err := p.Publish(ctx, chunk); err != nil {
					b.Fatal(err)
				}
				queued += len(chunk)
				for queued > depth {
					t := p.take()
					queued -= len(t.lines)
					p.release(t.bytes)
				}
			}
		})
	}
}

// TestLineQueue pushes chunks of random sizes and takes batches of
// random limits: every line comes out once, in order, and each batch
// keeps to its limits (a first line over maxBytes alone excepted).
func TestLineQueue(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var q lineQueue
	var in, out [][]byte
	next := 0
	for round := range 2000 {
		if rng.IntN(3) > 0 {
			chunk := make([][]byte, rng.IntN(20))
			for i := range chunk {
				chunk[i] = []byte(strings.Repeat("x", rng.IntN(30)) + strconv.Itoa(next))
				next++
			}
			q.push(chunk)
			in = append(in, chunk...)
		}
		maxLines, maxBytes := 1+rng.IntN(40), 1+rng.IntN(400)
		lines, size := q.take(maxLines, maxBytes)
		if got := len(in) - len(out) - len(lines); q.len() != got {
			t.Fatalf("round %d: len %d after taking %d, want %d", round, q.len(), len(lines), got)
		}
		sum := 0
		for _, l := range lines {
			sum += len(l) + 1
		}
		if sum != size {
			t.Fatalf("round %d: size %d, the lines have %d", round, size, sum)
		}
		if len(lines) > maxLines || len(lines) > 1 && size > maxBytes {
			t.Fatalf("round %d: %d lines of %d bytes, limits %d and %d", round, len(lines), size, maxLines, maxBytes)
		}
		if len(lines) == 0 && q.len() > 0 {
			t.Fatalf("round %d: nothing taken from %d lines", round, q.len())
		}
		out = append(out, lines...)
	}
	for q.len() > 0 {
		lines, _ := q.take(1000, 1<<20)
		out = append(out, lines...)
	}
	if len(out) != len(in) {
		t.Fatalf("%d lines out, %d in", len(out), len(in))
	}
	for i := range in {
		if !bytes.Equal(in[i], out[i]) {
			t.Fatalf("line %d: %q, want %q", i, out[i], in[i])
		}
	}
	if lines, size := q.take(10, 10); lines != nil || size != 0 {
		t.Fatalf("take from an empty queue: %d lines, %d bytes", len(lines), size)
	}
}
