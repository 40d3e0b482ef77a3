package pool

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/chatty-dev/chatty/internal/logging"
)

// firstLines collects what "first-line" workers report.
type firstLines struct{ c chan time.Duration }

func (f firstLines) Levels() []logrus.Level { return logrus.AllLevels }

func (f firstLines) Fire(e *logrus.Entry) error {
	if v, ok := strings.CutPrefix(e.Message, "first-line after="); ok {
		if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
			select {
			case f.c <- time.Duration(ns):
			default:
			}
		}
	}
	return nil
}

// BenchmarkSlotIdentification measures what recognising a slot's worker
// (pool.replay: unacked) adds to the time from a worker's connect to its
// first line, with 200 workers respawning (each lives 1-3 s, so about
// 100 start a second): a
// broadcaster stand-in accepts each connection, asks the pool about it as
// chattyd's text listener does, and writes it a line. One op is one
// worker's first line; p50/p99 of that time are reported with replay on
// and off, and of Claim alone. The 200 first starts are not counted.
func BenchmarkSlotIdentification(b *testing.B) {
	for _, replay := range []bool{false, true} {
		b.Run(fmt.Sprintf("replay=%v", replay), func(b *testing.B) { benchIdentify(b, replay) })
	}
}

func benchIdentify(b *testing.B, replay bool) {
	const workers = 200
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	o := testOptions("first-line", workers)
	o.Addr, o.Replay = ln.Addr().String(), replay
	o.MinUptime, o.BackoffInitial, o.BackoffMax = time.Millisecond, 10*time.Millisecond, 100*time.Millisecond
	samples := firstLines{c: make(chan time.Duration, 4*workers)}
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.AddHook(samples)
	p, err := New(o, logrus.NewEntry(l).WithField(logging.FieldComponent, "pool"))
	if err != nil {
		b.Fatal(err)
	}

	var mu sync.Mutex // guards claims
	var claims []time.Duration
	var conns sync.WaitGroup
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t0 := time.Now()
			ended := func() {}
			if p.Awaiting() {
				if cl, ok := p.Claim(c); ok {
					cl.Started(1)
					ended = func() { cl.Ended(1, 1) }
				}
			}
			d := time.Since(t0)
			mu.Lock()
			claims = append(claims, d)
			mu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				c.Write([]byte("line\n"))
				io.Copy(io.Discard, c)
				c.Close()
				ended() // as the broadcaster reports a client's end
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		p.Run(ctx)
	}()
	defer func() {
		cancel()
		<-runDone
		ln.Close()
		<-acceptDone
		conns.Wait()
	}()

	next := func() time.Duration {
		select {
		case d := <-samples.c:
			return d
		case <-time.After(30 * time.Second):
			b.Fatal("no worker reported its first line for 30 s")
			return 0
		}
	}
	for range workers { // the first starts, all at once
		next()
	}
	mu.Lock()
	warm := len(claims)
	mu.Unlock()
	var e2e []time.Duration
	b.ResetTimer()
	for b.Loop() {
		e2e = append(e2e, next())
	}
	b.StopTimer()
	mu.Lock()
	steady := slices.Clone(claims[warm:])
	mu.Unlock()
	report := func(name string, ds []time.Duration) {
		if len(ds) == 0 {
			return
		}
		slices.Sort(ds)
		q := func(f float64) float64 { return float64(ds[int(f*float64(len(ds)-1))].Microseconds()) / 1000 }
		b.ReportMetric(q(0.5), name+"-p50-ms")
		b.ReportMetric(q(0.99), name+"-p99-ms")
	}
	report("first-line", e2e)
	report("claim", steady)
}
