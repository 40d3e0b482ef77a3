package workqueue

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
)

// BenchmarkQueue hands b.N lines of 64 bytes, published in batches of 256
// as the feed does, to 16 workers on loopback TCP that acknowledge each
// line, and reports lines handed out and acknowledged per second.
func BenchmarkQueue(b *testing.B) {
	for _, window := range []int{64, 256} {
		b.Run(fmt.Sprintf("workers=16/window=%d", window), func(b *testing.B) { benchQueue(b, 16, window) })
	}
}

func benchQueue(b *testing.B, workers, window int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	opts := DefaultOptions()
	opts.MaxInFlight = window
	q := New(ln, opts, logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- q.Run(ctx) }()
	defer func() { cancel(); <-ran }()

	var acked atomic.Int64
	var wg sync.WaitGroup
	conns := make([]net.Conn, workers)
	for i := range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
		wg.Go(func() { ackEvery(c, &acked) })
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	for q.Stats().Connected < workers {
		time.Sleep(time.Millisecond)
	}
	line := bytes.Repeat([]byte("x"), 64)
	batch := make([][]byte, 256)
	for i := range batch {
		batch[i] = line
	}
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for left := b.N; left > 0; left -= len(batch) {
		q.Publish(batch[:min(left, len(batch))])
	}
	for acked.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lines/s")
	b.ReportMetric(0, "ns/op")
}

// ackEvery acknowledges every line read from c, the acks of one read in
// one write, and counts them.
func ackEvery(c net.Conn, acked *atomic.Int64) {
	r := bufio.NewReaderSize(c, 64<<10)
	var out []byte
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		out = fmt.Appendf(out, "ACK_RECEIVED %d\n", len(line)-1)
		if r.Buffered() == 0 {
			n := int64(len(out) / len("ACK_RECEIVED 64\n"))
			if _, err := c.Write(out); err != nil {
				return
			}
			acked.Add(n)
			out = out[:0]
		}
	}
}
