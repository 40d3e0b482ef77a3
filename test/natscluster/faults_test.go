package natscluster

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// edgeConfig is the configuration of a chattyd attached to the cluster's
// stream, with its sequenced listener on seqAddr.
func edgeConfig(c *Cluster, seqAddr string) string {
	return fmt.Sprintf(`version: 1
pool:
  size: 0
broadcast:
  sequenced:
    listen: %s
nats:
  urls: [%s]
  stream:
    name: FEED
    subjects: [chatty.feed]
    replicas: 3
  publish:
    ack_timeout: 2s
  consume:
    start: first
    heartbeat: 1s
`, seqAddr, c.URLs())
}

// edge is one chattyd of the test, restartable on the same addresses.
type edge struct {
	name    string
	config  string
	seqAddr string
	mu      sync.Mutex // guards d
	d       *harness.Daemon
}

func startEdge(t *testing.T, c *Cluster, name string) *edge {
	e := &edge{name: name, seqAddr: harness.FreeAddr(t)}
	e.config = edgeConfig(c, e.seqAddr)
	e.start(t)
	return e
}

func (e *edge) start(t *testing.T) {
	t.Helper()
	d := harness.StartDaemon(t, harness.Options{Config: e.config})
	e.mu.Lock()
	e.d = d
	e.mu.Unlock()
}

func (e *edge) daemon() *harness.Daemon {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.d
}

func (e *edge) status(t *testing.T) control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.New(e.daemon().ControlSocket()).Status(ctx)
	if err != nil {
		t.Fatalf("status of %s: %v", e.name, err)
	}
	return st
}

// subscriber reads an edge's sequenced listener and checks every line:
// numbered one more than the last, the feed's line of that number, never
// a gap. When the connection ends it resumes from the next line.
type subscriber struct {
	e      *edge
	stream string

	mu      sync.Mutex // guards the fields below
	next    uint64
	bad     []string
	resumed int
}

func (s *subscriber) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bad) < 20 {
		s.bad = append(s.bad, fmt.Sprintf(format, args...))
	}
}

func (s *subscriber) got() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next - 1
}

func (s *subscriber) run(ctx context.Context) {
	for ctx.Err() == nil {
		s.session(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond): // the edge restarting
		}
	}
}

// session reads one connection until it ends.
func (s *subscriber) session(ctx context.Context) {
	conn, err := net.DialTimeout("tcp", s.e.seqAddr, time.Second)
	if err != nil {
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	s.mu.Lock()
	next := s.next
	if next > 1 {
		s.resumed++
	}
	s.mu.Unlock()
	fmt.Fprintf(conn, "START %s %d\n", s.stream, next)
	r := bufio.NewReader(conn)
	l, err := r.ReadString('\n')
	if err != nil {
		return
	}
	if strings.HasPrefix(l, "ERROR ") {
		return // the edge has not reached the line yet, while it replays
	}
	if want := fmt.Sprintf("STREAM %s %d\n", s.stream, next); l != want {
		s.problem("answer %q, want %q", l, want)
		return
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimSuffix(l, "\n")
		num, text, ok := strings.Cut(l, " ")
		seq, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil {
			if l != "KEEP_ALIVE_ACK" {
				s.problem("line %q after %d", l, next-1)
			}
			continue
		}
		if seq != next {
			s.problem("line %d after %d", seq, next-1)
		}
		if want := line("l", int(seq-1)); text != want {
			s.problem("line %d is %q, want %q", seq, text, want)
		}
		next = seq + 1
		s.mu.Lock()
		s.next = next
		s.mu.Unlock()
	}
}

// The fault test: one publishing chattyd and two edges, each with a
// subscriber checking numbers. The feed runs at a steady rate while the
// stream leader is killed and restarted, an edge is killed and restarted
// (its subscriber resumes), and the publisher's NATS node is killed and
// restarted. Every subscriber gets every line once, in order; the last
// line's number is the number of lines fed.
func TestFaultsNothingLost(t *testing.T) {
	c := Start(t)
	_, st := connect(t, c) // the stream, once the cluster has elected
	rate, seconds := 1000, 15
	if full() {
		rate, seconds = 2000, 20
	}
	n := rate * seconds

	pub := startEdge(t, c, "publisher")
	edges := []*edge{pub, startEdge(t, c, "edge-a"), startEdge(t, c, "edge-b")}
	stream := pub.status(t).Stream.ID
	for _, e := range edges {
		if id := e.status(t).Stream.ID; id != stream {
			t.Fatalf("%s broadcasts stream %q, the publisher %q", e.name, id, stream)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var subs []*subscriber
	for _, e := range edges {
		s := &subscriber{e: e, stream: stream, next: 1}
		subs = append(subs, s)
		wg.Go(func() { s.run(ctx) })
	}

	fed := make(chan struct{})
	var nfed atomic.Int64
	go func() {
		defer close(fed)
		w := pub.daemon().FeedWriter()
		start := time.Now()
		const chunk = 20
		for i := 0; i < n; i += chunk {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d) // pacing the producer
			}
			var b strings.Builder
			for j := i; j < min(i+chunk, n); j++ {
				b.WriteString(line("l", j))
				b.WriteByte('\n')
			}
			if _, err := w.Write([]byte(b.String())); err != nil {
				t.Errorf("feed: %v", err)
				return
			}
			nfed.Store(int64(min(i+chunk, n)))
		}
	}()
	// Faults come at points of the feed, which runs at its rate
	// whatever they do to delivery.
	at := func(frac float64) {
		want := int64(float64(n) * frac)
		poll.Eventually(t, 60*time.Second, func() bool { return nfed.Load() >= want }, fmt.Sprintf("%d lines fed", want))
	}

	at(0.2)
	l := leader(t, c, st)
	t.Logf("SIGKILL the stream leader %s", l.Name)
	l.Kill()
	at(0.3)
	l.Start()
	// The stream's advisory of its new leader reached the edges, which
	// ask again on it rather than waiting out unanswered requests.
	poll.Eventually(t, 30*time.Second, func() bool {
		st := edges[1].status(t)
		return st.NATS != nil && st.NATS.Elections > 0
	}, "edge-a saw the stream elect a leader")

	at(0.45)
	t.Logf("SIGKILL edge-b")
	b := edges[2]
	b.daemon().Signal(syscall.SIGKILL)
	b.daemon().Wait(10 * time.Second)
	b.start(t)
	// Its subscriber resumes there, for lines fed after the kill.
	poll.Eventually(t, 30*time.Second, func() bool {
		s := subs[2]
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.resumed > 0
	}, "edge-b's subscriber resumed on the restarted edge")

	at(0.6)
	server := pub.status(t).NATS.Server
	var node *Node
	for _, nd := range c.Nodes {
		if strings.HasSuffix(server, nd.ClientAddr) {
			node = nd
		}
	}
	if node == nil {
		t.Fatalf("the publisher is connected to %q, no node of the cluster", server)
	}
	t.Logf("SIGKILL the publisher's NATS node %s", node.Name)
	node.Kill()
	at(0.75)
	node.Start()

	select {
	case <-fed:
	case <-time.After(time.Duration(seconds)*time.Second + 2*time.Minute):
		t.Fatalf("the feed is held back: %d of %d lines written to the publisher", nfed.Load(), n)
	}
	for i, s := range subs {
		poll.Eventually(t, 90*time.Second, func() bool { return s.got() >= uint64(n) }, fmt.Sprintf("every line at %s's subscriber", edges[i].name))
	}
	for i, s := range subs {
		s.mu.Lock()
		if len(s.bad) > 0 || s.next != uint64(n)+1 {
			t.Errorf("%s's subscriber: %d lines, problems %q", edges[i].name, s.next-1, s.bad)
		}
		s.mu.Unlock()
	}
	ps := pub.status(t).NATS
	if ps.Publish.LastSeq != uint64(n) || ps.Publish.Lines != uint64(n) {
		t.Errorf("publisher: %d lines acknowledged, the last numbered %d; want %d", ps.Publish.Lines, ps.Publish.LastSeq, n)
	}
	for _, e := range edges {
		if cs := e.status(t).NATS.Consume; cs.LastSeq != uint64(n) || cs.Gaps != 0 {
			t.Errorf("%s consumed up to %d with %d gaps; want %d and none", e.name, cs.LastSeq, cs.Gaps, n)
		}
	}
	// A number got from one edge means the same line on another: a
	// client of the publisher's resumes on edge-a.
	conn, err := net.DialTimeout("tcp", edges[1].seqAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	from := uint64(n / 2)
	fmt.Fprintf(conn, "START %s %d\n", stream, from)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	for _, want := range []string{fmt.Sprintf("STREAM %s %d\n", stream, from), fmt.Sprintf("%d %s\n", from, line("l", int(from-1)))} {
		if got, err := r.ReadString('\n'); got != want {
			t.Errorf("resuming on edge-a: got %q (%v), want %q", got, err, want)
		}
	}
	t.Logf("publisher: %+v", ps.Publish)
}
