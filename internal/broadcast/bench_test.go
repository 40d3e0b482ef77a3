package broadcast

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/test/harness"
)

// BenchmarkFanout publishes 64-byte lines in batches of 1000 to N loopback
// clients that read as fast as they can, and reports deliveries per second.
func BenchmarkFanout(b *testing.B) {
	for _, clients := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchFanout(b, clients, nil)
		})
	}
}

// BenchmarkFanoutTLS is BenchmarkFanout with every client on TLS 1.3
// (AES-GCM or ChaCha20-Poly1305, as negotiated); compare the two in one run.
func BenchmarkFanoutTLS(b *testing.B) {
	pki := harness.NewPKI(b)
	tc, err := tlsconf.NewServer(tlsconf.ServerFiles{CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	if err != nil {
		b.Fatal(err)
	}
	for _, clients := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchFanout(b, clients, &tlsBench{server: tc.Config(), client: &tls.Config{RootCAs: pki.CA}})
		})
	}
}

type tlsBench struct{ server, client *tls.Config }

func benchFanout(b *testing.B, clients int, tb *tlsBench) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	lim := testLimits()
	lim.QueueBytes = 256 << 20
	lim.QueueLines = 1 << 24
	var srvLn net.Listener = ln
	if tb != nil {
		srvLn = tls.NewListener(ln, tb.server)
	}
	s := New(srvLn, lim, logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	const perBatch = 1000
	line := bytes.Repeat([]byte("x"), 64)
	batch := make([][]byte, perBatch)
	for i := range batch {
		batch[i] = line
	}
	total := int64(b.N) * perBatch * int64(len(line)+1)

	var wg sync.WaitGroup
	for range clients {
		var c net.Conn
		var err error
		if tb != nil {
			c, err = tls.Dial("tcp", s.Addr().String(), tb.client)
		} else {
			c, err = net.Dial("tcp", s.Addr().String())
		}
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.CopyN(io.Discard, c, total)
		}()
	}
	for s.Stats().Connected < clients {
		time.Sleep(time.Millisecond)
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		// Keep the slowest client within its queue limits.
		for s.lines.endPos.Load()-minSent(s) > 64<<20 {
			time.Sleep(100 * time.Microsecond)
		}
		s.Publish(batch)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)*perBatch*float64(clients)/elapsed.Seconds(), "deliveries/s")
}

func minSent(s *Server) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lines.endPos.Load()
	for _, c := range s.clients {
		m = min(m, c.w.sentPos.Load())
	}
	return m
}
