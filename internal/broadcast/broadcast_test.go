package broadcast

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/poll"
)

func testLimits() Limits {
	return Limits{
		IdleTimeout:   time.Minute,
		MaxClientLine: 4096,
		QueueBytes:    64 << 20,
		QueueLines:    1 << 20,
		DrainTimeout:  5 * time.Second,
	}
}

// startServer runs a server on 127.0.0.1:0 until the test ends.
func startServer(t *testing.T, lim Limits) *Server {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, lim, logging.Discard())
	runServer(t, s)
	return s
}

// runServer runs s until stop is called or the test ends; stop (safe to
// call twice) cancels Run, waits for it and checks its error, and at the
// end of the test no goroutine of the server may be left.
func runServer(t *testing.T, s *Server) (stop func()) {
	t.Helper()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	t.Cleanup(func() {
		stop()
		poll.Eventually(t, wait, func() bool { return runtime.NumGoroutine() <= before }, "goroutines back to baseline")
	})
	return stop
}

// wait bounds the tests' polls for a condition.
const wait = 10 * time.Second

type testClient struct {
	net.Conn
	r *bufio.Reader
}

// dial connects and waits until the server has registered the client, so
// that lines published afterwards are owed to it.
func dial(t *testing.T, s *Server) *testClient {
	t.Helper()
	want := s.Stats().Accepted + 1
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	poll.Eventually(t, wait, func() bool { return s.Stats().Accepted >= want }, "client registered")
	return &testClient{Conn: c, r: bufio.NewReaderSize(c, 1<<16)}
}

func (c *testClient) readLine(t *testing.T) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (after %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

func publish(s *Server, lines ...string) {
	b := make([][]byte, len(lines))
	for i, l := range lines {
		b[i] = []byte(l)
	}
	s.Publish(b)
}

func TestLogAcrossChunks(t *testing.T) {
	l := newLog(textCodec{})
	start, _, _ := l.join()
	var want bytes.Buffer
	line := bytes.Repeat([]byte("a"), 1000)
	for i := 0; i < 3*chunkSize/1000; i++ {
		l.append([][]byte{line})
		want.Write(line)
		want.WriteByte('\n')
	}
	huge := bytes.Repeat([]byte("h"), 2*chunkSize) // needs a chunk of its own
	l.append([][]byte{huge, []byte("after")})
	want.Write(huge)
	want.WriteString("\nafter\n")

	var got bytes.Buffer
	cur := start
	for {
		data, next := cur.next()
		if len(data) == 0 {
			break
		}
		if len(data) > len(huge)+1 {
			t.Fatalf("one read returned %d bytes, more than a chunk", len(data))
		}
		got.Write(data)
		cur = next
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("read %d bytes, want %d", got.Len(), want.Len())
	}
	if wantSeq := uint64(3*chunkSize/1000 + 3); cur.seq != wantSeq {
		t.Errorf("cursor seq = %d, want %d", cur.seq, wantSeq)
	}
	if cur.pos() != uint64(want.Len()) || l.endPos.Load() != uint64(want.Len()) {
		t.Errorf("positions: cursor %d, log end %d, want %d", cur.pos(), l.endPos.Load(), want.Len())
	}
}

// Every client receives every line published after it connected, in
// order, whatever the batch sizes.
func TestEveryClientGetsEveryLineInOrder(t *testing.T) {
	s := startServer(t, testLimits())
	const clients, lines = 5, 50000
	cs := make([]*testClient, clients)
	for i := range cs {
		cs[i] = dial(t, s)
	}
	go func() {
		for i := 0; i < lines; {
			n := 1 + i%97
			batch := make([]string, 0, n)
			for j := 0; j < n && i < lines; j++ {
				batch = append(batch, fmt.Sprintf("line %d", i))
				i++
			}
			publish(s, batch...)
		}
	}()
	errs := make(chan error, clients)
	for _, c := range cs {
		go func() {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			for i := range lines {
				got, err := c.r.ReadString('\n')
				if err != nil {
					errs <- fmt.Errorf("line %d: %v", i, err)
					return
				}
				if want := fmt.Sprintf("line %d\n", i); got != want {
					errs <- fmt.Errorf("got %q, want %q", got, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Lines != lines || st.Undelivered != 0 {
		t.Errorf("stats: %d lines, %d undelivered", st.Lines, st.Undelivered)
	}
}

func TestUndeliveredWithoutClients(t *testing.T) {
	s := startServer(t, testLimits())
	publish(s, "nobody", "hears", "this")
	c := dial(t, s)
	publish(s, "first")
	if got := c.readLine(t); got != "first" {
		t.Errorf("a new client got %q, want only lines after it connected", got)
	}
	if st := s.Stats(); st.Undelivered != 3 {
		t.Errorf("undelivered = %d, want 3", st.Undelivered)
	}
}

func TestKeepAliveAnsweredAtLineBoundary(t *testing.T) {
	s := startServer(t, testLimits())
	c := dial(t, s)
	publish(s, "one")
	if got := c.readLine(t); got != "one" {
		t.Fatalf("got %q", got)
	}
	fmt.Fprint(c, "KEEP_ALIVE\nKEEP_ALIVE\r\n")
	for i := range 2 {
		if got := c.readLine(t); got != "KEEP_ALIVE_ACK" {
			t.Fatalf("answer %d = %q", i, got)
		}
	}
	publish(s, "two")
	if got := c.readLine(t); got != "two" {
		t.Fatalf("got %q", got)
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().KeepAlives == 2 }, "keep-alives counted")
	if cs := s.Clients(); len(cs) != 1 || cs[0].KeepAlives != 2 {
		t.Errorf("clients %+v; want one with 2 keep-alives answered", cs)
	}
}

func TestAckMatching(t *testing.T) {
	s := startServer(t, testLimits())
	c := dial(t, s)
	// A feed line equal to the keep-alive answer is never acknowledged by
	// the original workers, so it must not shift the matching.
	publish(s, "abc", "KEEP_ALIVE_ACK", "hello", "x")
	for range 4 {
		c.readLine(t)
	}
	poll.Eventually(t, wait, func() bool { return s.Clients()[0].QueueLines == 0 }, "all lines written")
	fmt.Fprint(c, "ACK_RECEIVED 3\r\nACK_RECEIVED 5\nACK_RECEIVED 7\nhello there\n")
	poll.Eventually(t, wait, func() bool {
		st := s.Stats()
		return st.AcksGood == 2 && st.AcksMismatched == 1
	}, "acks counted")
	if ci := s.Clients()[0]; ci.AckLag != 0 || ci.AcksGood != 2 || ci.LinesSent != 4 {
		t.Errorf("client info = %+v", ci)
	}
	// An ack for a line never sent is a mismatch, not a crash.
	fmt.Fprint(c, "ACK_RECEIVED 1\n")
	poll.Eventually(t, wait, func() bool { return s.Stats().AcksMismatched == 2 }, "unexpected ack counted")
}

// Acks are matched across chunk boundaries.
func TestAckMatchingAcrossChunks(t *testing.T) {
	s := startServer(t, testLimits())
	c := dial(t, s)
	line := strings.Repeat("q", 999)
	n := 2*chunkSize/1000 + 10
	batch := make([]string, n)
	for i := range batch {
		batch[i] = line
	}
	publish(s, batch...)
	var acks bytes.Buffer
	for range n {
		if got := c.readLine(t); got != line {
			t.Fatalf("got %d bytes", len(got))
		}
		acks.WriteString("ACK_RECEIVED 999\n")
	}
	c.Write(acks.Bytes())
	poll.Eventually(t, wait, func() bool { return s.Stats().AcksGood == uint64(n) }, "acks counted")
	if st := s.Stats(); st.AcksMismatched != 0 {
		t.Errorf("%d mismatched", st.AcksMismatched)
	}
}

// A client that acknowledges nothing within ackGrace of its first line is
// taken for one that never will: it stops holding the log's chunks, well
// before the queue limits, while a client that acknowledges goes on being
// matched line by line.
func TestNonAckingClientReleasesTheLog(t *testing.T) {
	// Restored by a cleanup registered before the server's, so after the
	// server has stopped: its writers read ackGrace until then.
	old := ackGrace
	t.Cleanup(func() { ackGrace = old })
	ackGrace = 20 * time.Millisecond
	s := startServer(t, testLimits()) // queue limits of 64 MiB and a million lines
	quiet, acker := dial(t, s), dial(t, s)
	first := weak.Make(s.lines.head)

	publish(s, "first")
	quiet.readLine(t)
	acker.readLine(t)
	fmt.Fprint(acker, "ACK_RECEIVED 5\n")
	poll.Eventually(t, wait, func() bool { return s.Stats().AcksGood == 1 }, "the first ack counted")

	// Each write after ackGrace looks at it again.
	lagOf := func(c *testClient) uint64 {
		local := c.LocalAddr().String()
		for _, ci := range s.Clients() {
			if ci.Remote == local {
				return ci.AckLag
			}
		}
		t.Fatalf("client %s not found", local)
		return 0
	}
	sent := 1
	poll.Eventually(t, wait, func() bool {
		publish(s, "more")
		sent++
		return lagOf(quiet) == 0
	}, "the quiet client's acks no longer expected")

	// Two chunks' worth of lines: the first chunk is now held by no one,
	// once the acker has acknowledged everything.
	line := strings.Repeat("z", 999)
	batch := make([]string, 2*chunkSize/1000+10)
	for i := range batch {
		batch[i] = line
	}
	publish(s, batch...)
	var acks bytes.Buffer
	for range sent - 1 + len(batch) {
		got := acker.readLine(t)
		fmt.Fprintf(&acks, "ACK_RECEIVED %d\n", len(got))
		if q := quiet.readLine(t); q != got {
			t.Fatalf("the quiet client got %.20q where the acker got %.20q", q, got)
		}
	}
	if lag := lagOf(acker); lag == 0 {
		t.Fatal("the acking client's acks are no longer expected")
	}
	acker.Write(acks.Bytes())
	want := uint64(sent + len(batch))
	poll.Eventually(t, wait, func() bool { return s.Stats().AcksGood == want }, "the acker's acks counted")
	if st := s.Stats(); st.AcksMismatched != 0 {
		t.Errorf("%d acks mismatched", st.AcksMismatched)
	}
	poll.Eventually(t, wait, func() bool {
		runtime.GC()
		return first.Value() == nil
	}, "the first chunk collected")
}

// A client that never reads is disconnected once it lags beyond its
// limits, while another client receives everything.
func TestSlowConsumerDisconnected(t *testing.T) {
	lim := testLimits()
	lim.QueueBytes = 1 << 20
	s := startServer(t, lim)
	stalled := dial(t, s)
	good := dial(t, s)
	const lines = 200000
	line := strings.Repeat("s", 100)
	done := make(chan error, 1)
	go func() {
		good.SetReadDeadline(time.Now().Add(30 * time.Second))
		for i := range lines {
			got, err := good.r.ReadString('\n')
			if err != nil || len(got) != len(line)+1 {
				done <- fmt.Errorf("line %d: %q %v", i, got, err)
				return
			}
		}
		done <- nil
	}()
	// Feed no faster than the good client reads (it keeps up), while the
	// stalled one falls behind for good.
	goodQueue := func() uint64 {
		for _, ci := range s.Clients() {
			if ci.ID == 2 {
				return ci.QueueBytes
			}
		}
		return 0
	}
	for i := 0; i < lines; i += 1000 {
		batch := make([]string, 1000)
		for j := range batch {
			batch[j] = line
		}
		publish(s, batch...)
		poll.Eventually(t, wait, func() bool { return goodQueue() < 256<<10 }, "good client keeps up")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().SlowConsumers == 1 }, "slow consumer counted")
	// The stalled client sees its connection end once it drains its buffer.
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	var err error
	for err == nil {
		_, err = stalled.r.ReadString('\n')
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("stalled client was not disconnected")
	}
	if st := s.Stats(); st.Connected != 1 {
		t.Errorf("connected = %d, want 1", st.Connected)
	}
}

func TestMaxClientsRefusal(t *testing.T) {
	lim := testLimits()
	lim.MaxClients = 1
	s := startServer(t, lim)
	first := dial(t, s)
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ERROR too many clients (max_clients 1)") {
		t.Fatalf("refused client read %q, %v", line, err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("refused connection stayed open")
	}
	publish(s, "still here")
	if got := first.readLine(t); got != "still here" {
		t.Errorf("first client got %q", got)
	}
	if st := s.Stats(); st.Refused != 1 || st.Connected != 1 {
		t.Errorf("refused = %d, connected = %d", st.Refused, st.Connected)
	}
}

// A flood of refusals logs one line a second, whoever logs first.
func TestLogLimiter(t *testing.T) {
	var l logLimiter
	if !l.allow() {
		t.Fatal("the first line was not allowed")
	}
	if l.allow() {
		t.Fatal("a second line within the second was allowed")
	}
	l.last.Add(-int64(time.Second))
	if !l.allow() {
		t.Fatal("no line allowed a second after the last")
	}
}

func TestClientLineTooLong(t *testing.T) {
	lim := testLimits()
	lim.MaxClientLine = 64
	s := startServer(t, lim)
	c := dial(t, s)
	c.Write(bytes.Repeat([]byte("z"), 200))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Fatal("connection stayed open")
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Protocol == 1 }, "protocol close counted")
}

// A client that sent a keep-alive once and then nothing is closed at the
// idle timeout.
func TestIdleTimeout(t *testing.T) {
	lim := testLimits()
	lim.IdleTimeout = 200 * time.Millisecond
	s := startServer(t, lim)
	c := dial(t, s)
	io.WriteString(c, "KEEP_ALIVE\n")
	if got := c.readLine(t); got != "KEEP_ALIVE_ACK" {
		t.Fatalf("got %q, want the keep-alive's answer", got)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.r.ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle connection stayed open (%v)", err)
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().IdleClosed == 1 }, "idle close counted")
}

// A client that never sent a keep-alive (nc watching the feed) is not
// subject to the idle timeout. A second client, connected after it, that
// sent one KEEP_ALIVE and then went silent is closed: the sweep has run
// past the silent client's deadline too, and it is still connected and
// receives a line published after that.
func TestSilentClientOutlivesIdleTimeout(t *testing.T) {
	lim := testLimits()
	lim.IdleTimeout = 300 * time.Millisecond
	s := startServer(t, lim)
	silent := dial(t, s)
	speaker := dial(t, s)
	io.WriteString(speaker, "KEEP_ALIVE\n")
	if got := speaker.readLine(t); got != "KEEP_ALIVE_ACK" {
		t.Fatalf("speaker got %q, want the keep-alive's answer", got)
	}
	speaker.SetReadDeadline(time.Now().Add(20 * lim.IdleTimeout))
	if _, err := speaker.r.ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the client that kept alive once was not closed at the idle timeout (%v)", err)
	}
	// Counted before the connection closes, gone from Connected after.
	poll.Eventually(t, wait, func() bool { st := s.Stats(); return st.IdleClosed == 1 && st.Connected == 1 },
		"idle close counted and only the silent client connected")
	publish(s, "still here")
	if got := silent.readLine(t); got != "still here" {
		t.Fatalf("silent client got %q", got)
	}
	if st := s.Stats(); st.IdleClosed != 1 || st.Connected != 1 {
		t.Errorf("idle closed %d, connected %d; want 1 and 1", st.IdleClosed, st.Connected)
	}
}

// At shutdown, lines already published reach the client before the end.
func TestShutdownDrains(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, testLimits(), logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c := dial(t, s)
	const lines = 100000
	batch := make([]string, lines)
	for i := range batch {
		batch[i] = fmt.Sprintf("drain %d", i)
	}
	publish(s, batch...)
	cancel()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range lines {
		got, err := c.r.ReadString('\n')
		if want := fmt.Sprintf("drain %d\n", i); got != want || err != nil {
			t.Fatalf("line %d: %q, %v", i, got, err)
		}
	}
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Fatal("expected end of stream after the drain")
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestListenAddrInUse(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("err = %v", err)
	}
}

// A client that sends a keep-alive and closes its sending side at once
// still gets its answer before the connection ends.
func TestKeepAliveAnsweredBeforeHalfCloseEnds(t *testing.T) {
	s := startServer(t, testLimits())
	for i := range 20 {
		c := dial(t, s)
		fmt.Fprint(c, "KEEP_ALIVE\n")
		c.Conn.(*net.TCPConn).CloseWrite()
		if got := c.readLine(t); got != "KEEP_ALIVE_ACK" {
			t.Fatalf("round %d: got %q", i, got)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.r.ReadString('\n'); err == nil {
			t.Fatalf("round %d: connection stayed open after the client's end", i)
		}
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 0 }, "all closed")
}

// A complete client line over the limit closes the client too, not only
// an unterminated one.
func TestCompleteClientLineTooLong(t *testing.T) {
	lim := testLimits()
	lim.MaxClientLine = 64
	s := startServer(t, lim)
	ok := dial(t, s)
	fmt.Fprintf(ok, "%s\r\nKEEP_ALIVE\n", strings.Repeat("k", 64)) // at the limit
	if got := ok.readLine(t); got != "KEEP_ALIVE_ACK" {
		t.Fatalf("a line at the limit: got %q", got)
	}
	c := dial(t, s)
	fmt.Fprintf(c, "%s\nKEEP_ALIVE\n", strings.Repeat("w", 65))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := c.r.ReadString('\n'); err == nil {
		t.Fatalf("connection stayed open and answered %q", line)
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Protocol == 1 }, "protocol close counted")
}

// The log is freed behind its clients: streaming far more than the queue
// limits through a client keeps the live heap near those limits. (A
// cursor kept for the client's lifetime once pinned every chunk.)
func TestLogMemoryIsBounded(t *testing.T) {
	lim := testLimits()
	lim.QueueBytes = 1 << 20
	s := startServer(t, lim)
	c := dial(t, s)
	const total = 64 << 20
	line := bytes.Repeat([]byte("m"), 1023)
	batch := make([][]byte, 256)
	for i := range batch {
		batch[i] = line
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, c, total)
		done <- err
	}()
	for sent := 0; sent < total; sent += len(batch) * 1024 {
		s.Publish(batch)
		poll.Eventually(t, wait, func() bool {
			cs := s.Clients()
			return len(cs) == 1 && cs[0].QueueBytes < 512<<10
		}, "client keeps up")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > 16<<20 {
		t.Errorf("live heap %d MiB after streaming %d MiB with 1 MiB queue limits", ms.HeapAlloc>>20, total>>20)
	}
}

// lateConn returns from Write some time after its bytes are on the wire,
// as a write system call may on a loaded machine.
type lateConn struct{ net.Conn }

func (c lateConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	time.Sleep(20 * time.Millisecond)
	return n, err
}

type lateListener struct{ net.Listener }

func (l lateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return lateConn{c}, nil
}

// An ack that arrives while the write carrying its line has not returned
// yet is matched, not taken for an ack of a line never sent.
func TestAckDuringWrite(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(lateListener{ln}, testLimits(), logging.Discard())
	runServer(t, s)
	c := dial(t, s)
	const lines = 20
	for i := range lines {
		publish(s, fmt.Sprintf("ack me %d", i))
		got := c.readLine(t)
		fmt.Fprintf(c, "ACK_RECEIVED %d\n", len(got))
	}
	poll.Eventually(t, wait, func() bool {
		st := s.Stats()
		return st.AcksGood+st.AcksMismatched == lines
	}, "every ack counted")
	if st := s.Stats(); st.AcksMismatched != 0 {
		t.Errorf("%d of %d right acks counted as mismatched", st.AcksMismatched, lines)
	}
	c.Close()
}

// Two publishers at once (the feed and a control-socket send) must not
// make a client that keeps up look like a slow consumer: a lag computed
// from an end read before the other publisher's lines once wrapped around.
func TestConcurrentPublishersKeepFastClients(t *testing.T) {
	s := startServer(t, testLimits())
	c := dial(t, s)
	const perPublisher = 20000
	go io.Copy(io.Discard, c)
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perPublisher {
				publish(s, fmt.Sprintf("publisher %d line %d", p, i))
			}
		}()
	}
	wg.Wait()
	for _, ci := range s.Clients() {
		if ci.QueueBytes > 64<<20 || ci.QueueLines > 1<<20 || ci.AckLag > 1<<20 {
			t.Errorf("client shows impossible lags: %+v", ci)
		}
	}
	if st := s.Stats(); st.SlowConsumers != 0 || st.Connected != 1 {
		t.Errorf("slow consumers %d, connected %d: a fast client was cut off", st.SlowConsumers, st.Connected)
	}
}

// A client that sends keep-alives without reading the answers cannot make
// the server queue answers without bound.
func TestUnreadKeepAliveAnswersAreBounded(t *testing.T) {
	s := startServer(t, testLimits())
	c := dial(t, s)
	flood := bytes.Repeat([]byte("KEEP_ALIVE\n"), 1<<20) // 11 MiB, never read
	go c.Write(flood)
	poll.Eventually(t, wait, func() bool { return s.Stats().SlowConsumers == 1 }, "the client disconnected")
}

// At shutdown, a client that received everything but does not close its
// end does not hold the server for the whole drain timeout: once its TCP
// has acknowledged every byte, the connection is closed.
func TestShutdownDoesNotWaitForIdleClients(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := testLimits()
	lim.DrainTimeout = 30 * time.Second
	s := New(ln, lim, logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c := dial(t, s)
	publish(s, "last words")
	if got := c.readLine(t); got != "last words" {
		t.Fatalf("got %q", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown waited for a client that had everything (drain_timeout 30s)")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Error("the client's connection was not closed")
	}
}

// The read buffer starts small and grows: lines up to MaxClientLine, sent
// a byte at a time or all at once, are read whole, and acks sent in bulk
// are all counted.
func TestClientLinesLongerThanTheFirstBuffer(t *testing.T) {
	lim := testLimits() // MaxClientLine 4096
	s := startServer(t, lim)
	c := dial(t, s)
	long := bytes.Repeat([]byte("y"), lim.MaxClientLine)
	for _, b := range append(long[:300:300], '\n') {
		c.Write([]byte{b}) // a slow sender: the buffer fills byte by byte
	}
	c.Write(append(long, "\r\nKEEP_ALIVE\n"...))
	if line := c.readLine(t); line != "KEEP_ALIVE_ACK" {
		t.Fatalf("got %q, want KEEP_ALIVE_ACK", line)
	}
	const n = 5000
	lines := make([]string, n)
	for i := range lines {
		lines[i] = strings.Repeat("l", 1+i%50)
	}
	publish(s, lines...)
	var acks bytes.Buffer
	for i := range lines {
		if got := c.readLine(t); got != lines[i] {
			t.Fatalf("line %d: got %q", i, got)
		}
		fmt.Fprintf(&acks, "ACK_RECEIVED %d\n", len(lines[i]))
	}
	c.Write(acks.Bytes())
	poll.Eventually(t, wait, func() bool { return s.Stats().AcksGood == n }, "every ack counted")
	if st := s.Stats(); st.AcksMismatched != 0 || st.Protocol != 0 {
		t.Fatalf("mismatched %d, protocol closes %d; want 0 and 0", st.AcksMismatched, st.Protocol)
	}
}
