package broadcast

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
)

// BenchmarkCatchUp compares, in one run, a client resuming 1,000,000 lines
// behind (the sequenced listener's START, from the retained log) with a
// live client of the same server receiving 1,000,000 lines published at
// full speed, and reports both rates and their ratio (catch-up / live:
// the target is at least 1).
func BenchmarkCatchUp(b *testing.B) {
	const lines = 1_000_000
	line := bytes.Repeat([]byte("c"), 64)
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = line
	}
	var liveRate, catchRate float64
	for range b.N {
		ln, err := Listen("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		lim := testLimits()
		lim.QueueBytes, lim.QueueLines = 256<<20, 1<<24
		s := NewSequenced(ln, lim, logging.Discard())
		s.SetStream("bench")
		s.SetRetention(Retention{Bytes: 1 << 30})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()

		// Live: a client at the end while the feed is published.
		live := dialBench(b, s, "START - next")
		for s.Stats().Connected < 1 {
			time.Sleep(time.Millisecond)
		}
		read := make(chan int, 1)
		start := time.Now()
		go func() { read <- readLines(live, lines) }()
		for i := 0; i < lines; i += len(batch) {
			for s.lines.endPos.Load()-minSent(s) > 64<<20 {
				time.Sleep(100 * time.Microsecond)
			}
			s.Publish(batch)
		}
		if n := <-read; n != lines {
			b.Fatalf("live client read %d lines", n)
		}
		liveRate = lines / time.Since(start).Seconds()
		live.Close()

		// Catch-up: the same million lines, from the retained log.
		start = time.Now()
		c := dialBench(b, s, "START bench 1")
		if n := readLines(c, lines); n != lines {
			b.Fatalf("resuming client read %d lines", n)
		}
		catchRate = lines / time.Since(start).Seconds()
		c.Close()
		cancel()
		<-done
	}
	b.ReportMetric(liveRate, "live-lines/s")
	b.ReportMetric(catchRate, "catchup-lines/s")
	b.ReportMetric(catchRate/liveRate, "catchup/live")
}

// dialBench connects to a sequenced server and sends start, and reads
// the server's answer.
func dialBench(b *testing.B, s *Server, start string) benchConn {
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "%s\n", start)
	r := bufio.NewReaderSize(c, 256<<10)
	if _, err := r.ReadSlice('\n'); err != nil {
		b.Fatal(err)
	}
	return benchConn{c, r}
}

type benchConn struct {
	net.Conn
	r *bufio.Reader
}

// readLines reads n lines or until an error, and returns how many it read.
func readLines(c benchConn, n int) int {
	for i := range n {
		if _, err := c.r.ReadSlice('\n'); err != nil {
			return i
		}
	}
	return n
}

// BenchmarkRetention compares live fan-out with retention on (64 MiB,
// filled before the clients connect) and off in one run, at 100 and 1000
// clients: deliveries per second of each, their ratio (target at least
// 0.95), and the heap held after the run beyond the retention-off run's,
// against retain.bytes (target: no more than 10% above it).
func BenchmarkRetention(b *testing.B) {
	const retain = 64 << 20
	for _, clients := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			// Off, on, on, off: a machine whose speed drifts during the
			// run favours neither.
			var offRate, onRate float64
			var offHeap, onHeap uint64
			for range b.N {
				for _, r := range []Retention{{}, {Bytes: retain}, {Bytes: retain}, {}} {
					res := fanoutOnce(b, clients, r)
					if r.Bytes == 0 {
						offRate += res.rate
						offHeap = max(offHeap, res.heap)
					} else {
						onRate += res.rate
						onHeap = max(onHeap, res.heap)
					}
				}
			}
			b.ReportMetric(offRate/float64(2*b.N), "off-deliveries/s")
			b.ReportMetric(onRate/float64(2*b.N), "on-deliveries/s")
			b.ReportMetric(onRate/offRate, "on/off")
			b.ReportMetric(float64(int64(onHeap)-int64(offHeap))/retain, "extra-heap/retain")
		})
	}
}

type fanoutResult struct {
	rate float64 // deliveries per second
	heap uint64  // heap in use after the feed, with the server still up
}

// fanoutOnce publishes 128 MiB of 64-byte lines to clients reading as fast
// as they can.
func fanoutOnce(b *testing.B, clients int, r Retention) fanoutResult {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	lim := testLimits()
	lim.QueueBytes, lim.QueueLines = 256<<20, 1<<24
	s := New(ln, lim, logging.Discard())
	s.SetRetention(r)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	line := bytes.Repeat([]byte("r"), 64)
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = line
	}
	// Before the clients come, as much as the retention holds: the timed
	// part is the steady state, where chunks are released as others
	// are filled, not the first fill of fresh memory. Then 200,000,000
	// deliveries, at least 200,000 lines.
	for range 1100 { // 1,100,000 lines, 72 MB
		s.Publish(batch)
	}
	batches := max(200, 200_000/clients)
	total := int64(batches) * int64(len(batch)) * int64(len(line)+1)
	var wg sync.WaitGroup
	conns := make([]net.Conn, clients)
	for i := range conns {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
		wg.Go(func() { io.CopyN(io.Discard, c, total) })
	}
	for s.Stats().Connected < clients {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	for range batches {
		for s.lines.endPos.Load()-minSent(s) > 64<<20 {
			time.Sleep(100 * time.Microsecond)
		}
		s.Publish(batch)
	}
	wg.Wait()
	res := fanoutResult{rate: float64(batches*len(batch)*clients) / time.Since(start).Seconds()}
	for _, c := range conns {
		c.Close()
	}
	// The clients' cursors pin chunks until they are gone.
	for s.Stats().Connected > 0 {
		time.Sleep(time.Millisecond)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.heap = ms.HeapInuse
	return res
}
