package workqueue

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

const waitFor = 10 * time.Second

// start runs a queue on a port of 127.0.0.1 until the test ends, and
// checks that Run returns and leaves no goroutine behind.
func start(t *testing.T, opts Options) (*Queue, *test.Hook) {
	t.Helper()
	return startQueue(t, opts, false)
}

// startQueue is start, with a sequenced listener too if sequenced.
func startQueue(t *testing.T, opts Options, sequenced bool) (*Queue, *test.Hook) {
	t.Helper()
	before := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	q := New(ln, opts, logrus.NewEntry(logger))
	if sequenced {
		sln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		q.AddSequenced(sln, testStream)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Fatal("Run did not return after its context was cancelled")
		}
		if err := poll.Until(context.Background(), waitFor, func() bool { return runtime.NumGoroutine() <= before }); err != nil {
			t.Errorf("goroutines: %d before, %d after Run returned", before, runtime.NumGoroutine())
		}
	})
	return q, hook
}

// testWorker is a worker on a raw connection: it reads lines and, unless
// told otherwise, acknowledges each as the original worker does.
type testWorker struct {
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, q *Queue) *testWorker {
	t.Helper()
	conn, err := net.Dial("tcp", q.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testWorker{conn: conn, r: bufio.NewReader(conn)}
}

func (w *testWorker) read(t *testing.T) string {
	t.Helper()
	w.conn.SetReadDeadline(time.Now().Add(waitFor))
	l, err := w.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSuffix(l, "\n")
}

func (w *testWorker) ack(t *testing.T, n int) {
	t.Helper()
	if _, err := fmt.Fprintf(w.conn, "ACK_RECEIVED %d\n", n); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

// ackAll acknowledges every line it reads, recording them, until its
// connection ends.
func (w *testWorker) ackAll(got chan<- string) {
	bw := bufio.NewWriter(w.conn)
	for {
		l, err := w.r.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimSuffix(l, "\n")
		got <- l
		fmt.Fprintf(bw, "ACK_RECEIVED %d\n", len(l))
		if w.r.Buffered() == 0 && bw.Flush() != nil {
			return
		}
	}
}

func connected(t *testing.T, q *Queue, n int) {
	t.Helper()
	if err := poll.Until(context.Background(), waitFor, func() bool { return q.Stats().Connected == n }); err != nil {
		t.Fatalf("%d workers connected, want %d", q.Stats().Connected, n)
	}
}

func lines(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s %06d %s", prefix, i+1, strings.Repeat("x", i%13))
	}
	return out
}

// Every line goes to exactly one worker, each worker gets a share, and the
// counters add up.
func TestEachLineToOneWorker(t *testing.T) {
	q, _ := start(t, DefaultOptions())
	const workers, n = 4, 4000
	got := make(chan string, n)
	for range workers {
		go dial(t, q).ackAll(got)
	}
	connected(t, q, workers)
	q.Publish(lines("job", n))
	seen := map[string]int{}
	for range n {
		select {
		case l := <-got:
			seen[l]++
		case <-time.After(waitFor):
			t.Fatalf("%d of %d lines received", len(seen), n)
		}
	}
	for _, l := range lines("job", n) {
		if seen[string(l)] != 1 {
			t.Fatalf("%q received %d times", l, seen[string(l)])
		}
	}
	if err := poll.Until(context.Background(), waitFor, func() bool { return q.Stats().Acked == n }); err != nil {
		t.Fatalf("acked %d, want %d", q.Stats().Acked, n)
	}
	for _, w := range q.Workers() {
		if w.Acked == 0 {
			t.Errorf("worker %d got no line: %+v", w.ID, q.Workers())
		}
	}
	st := q.Stats()
	if st.Redeliveries != 0 || st.Mismatched != 0 || st.InFlight != 0 || st.Waiting != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The window bounds what one worker holds; the least loaded gets the next
// line.
func TestWindowAndLeastLoaded(t *testing.T) {
	opts := DefaultOptions()
	opts.MaxInFlight = 3
	q, _ := start(t, opts)
	a := dial(t, q)
	connected(t, q, 1)
	q.Publish(lines("w", 5))
	for i := range 3 {
		if l := a.read(t); !strings.HasPrefix(l, fmt.Sprintf("w %06d", i+1)) {
			t.Fatalf("line %d: %q", i+1, l)
		}
	}
	if st := q.Stats(); st.InFlight != 3 || st.Waiting != 2 {
		t.Fatalf("in flight %d, waiting %d; want 3 and 2", st.InFlight, st.Waiting)
	}
	b := dial(t, q)
	// b, holding nothing, takes the two waiting lines.
	for i := 3; i < 5; i++ {
		if l := b.read(t); !strings.HasPrefix(l, fmt.Sprintf("w %06d", i+1)) {
			t.Fatalf("b, line %d: %q", i+1, l)
		}
	}
	// b takes one more; then both windows are full and lines wait,
	// until a reload widens the windows.
	q.Publish(lines("more", 3))
	if st := q.Stats(); st.Waiting != 2 || st.InFlight != 6 {
		t.Fatalf("in flight %d, waiting %d; want 6 and 2", st.InFlight, st.Waiting)
	}
	opts.MaxInFlight = 4
	q.SetOptions(opts)
	if st := q.Stats(); st.Waiting != 0 || st.InFlight != 8 {
		t.Fatalf("after SetOptions: in flight %d, waiting %d; want 8 and 0", st.InFlight, st.Waiting)
	}
}

// A worker that disconnects loses its unacknowledged lines, in order, to
// another; the one it acknowledged is not sent again.
func TestDisconnectRequeuesInOrder(t *testing.T) {
	q, hook := start(t, DefaultOptions())
	a := dial(t, q)
	connected(t, q, 1)
	ls := lines("r", 5)
	q.Publish(ls)
	first := a.read(t)
	for range 4 {
		a.read(t)
	}
	a.ack(t, len(first))
	if err := poll.Until(context.Background(), waitFor, func() bool { return q.Stats().Acked == 1 }); err != nil {
		t.Fatal("the ack was not counted")
	}
	a.conn.Close()
	connected(t, q, 0)
	if st := q.Stats(); st.Waiting != 4 {
		t.Fatalf("waiting %d, want 4", st.Waiting)
	}
	b := dial(t, q)
	for _, want := range ls[1:] {
		if l := b.read(t); l != string(want) {
			t.Fatalf("b got %q, want %q", l, want)
		}
		b.ack(t, len(want))
	}
	if err := poll.Until(context.Background(), waitFor, func() bool { return q.Stats().Acked == 5 }); err != nil {
		t.Fatalf("acked %d, want 5", q.Stats().Acked)
	}
	if st := q.Stats(); st.Redeliveries != 4 {
		t.Errorf("redeliveries %d, want 4", st.Redeliveries)
	}
	found := false
	for _, e := range hook.AllEntries() {
		if e.Message == "Connection closed" && e.Data["requeued"] == "2-5" {
			found = true
		}
	}
	if !found {
		t.Error(`no "Connection closed" log entry with requeued=2-5`)
	}
}

// A worker that holds a line past the ack timeout is disconnected and its
// lines go to another.
func TestAckTimeout(t *testing.T) {
	opts := DefaultOptions()
	opts.AckTimeout = 200 * time.Millisecond
	q, _ := start(t, opts)
	silent := dial(t, q)
	connected(t, q, 1)
	began := time.Now() // before the line is handed out, so never late
	q.Publish([][]byte{[]byte("slow job")})
	if l := silent.read(t); l != "slow job" {
		t.Fatalf("got %q", l)
	}
	other := dial(t, q)
	if l := other.read(t); l != "slow job" {
		t.Fatalf("other got %q", l)
	}
	if held := time.Since(began); held < opts.AckTimeout {
		t.Errorf("the line moved after %s, before the ack timeout (%s)", held, opts.AckTimeout)
	}
	silent.conn.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := silent.r.ReadString('\n'); err != io.EOF {
		t.Errorf("the silent worker's connection: %v, want EOF", err)
	}
	if st := q.Stats(); st.AckTimeouts != 1 || st.Redeliveries != 1 {
		t.Errorf("ack timeouts %d, redeliveries %d; want 1 and 1", st.AckTimeouts, st.Redeliveries)
	}
}

// A mismatched ack is counted and does not complete the line: it is sent
// again.
func TestMismatchedAck(t *testing.T) {
	q, _ := start(t, DefaultOptions())
	a := dial(t, q)
	connected(t, q, 1)
	q.Publish([][]byte{[]byte("twelve bytes")})
	a.read(t)
	a.ack(t, 5)
	if l := a.read(t); l != "twelve bytes" {
		t.Fatalf("got %q, want the line again", l)
	}
	a.ack(t, 12)
	if err := poll.Until(context.Background(), waitFor, func() bool { return q.Stats().Acked == 1 }); err != nil {
		t.Fatal("not acked")
	}
	if st := q.Stats(); st.Mismatched != 1 || st.Redeliveries != 1 {
		t.Errorf("mismatched %d, redeliveries %d; want 1 and 1", st.Mismatched, st.Redeliveries)
	}
}

// A line whose every worker dies is set aside after MaxDeliveries, once;
// the lines behind it flow; Retry puts it back.
func TestPoisonLine(t *testing.T) {
	opts := DefaultOptions()
	opts.MaxDeliveries = 3
	q, hook := start(t, opts)
	good := make(chan string, 100)
	// Workers that die on the poison line; each acknowledges the others.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); wg.Wait() })
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			w := dial(t, q)
			for {
				w.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				l, err := w.r.ReadString('\n')
				if err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						select {
						case <-stop:
							w.conn.Close()
							return
						default:
							continue
						}
					}
					break
				}
				l = strings.TrimSuffix(l, "\n")
				if l == "poison" {
					w.conn.Close()
					break
				}
				good <- l
				fmt.Fprintf(w.conn, "ACK_RECEIVED %d\n", len(l))
			}
		}
	})
	q.Publish([][]byte{[]byte("poison"), []byte("after 1"), []byte("after 2")})
	for _, want := range []string{"after 1", "after 2"} {
		select {
		case l := <-good:
			if l != want {
				t.Fatalf("got %q, want %q", l, want)
			}
		case <-time.After(waitFor):
			t.Fatalf("%q never arrived", want)
		}
	}
	if err := poll.Until(context.Background(), waitFor, func() bool { return len(q.DeadLetters()) == 1 }); err != nil {
		t.Fatal("no dead letter")
	}
	d := q.DeadLetters()[0]
	if d.Seq != 1 || string(d.Line) != "poison" || d.Deliveries != 3 {
		t.Fatalf("dead letter %+v", d)
	}
	logged := 0
	for _, e := range hook.AllEntries() {
		if strings.HasPrefix(e.Message, "Poison line 1 set aside") {
			logged++
		}
	}
	if logged != 1 {
		t.Errorf("the poison line was logged %d times, want once", logged)
	}
	if err := q.Retry(99); err == nil {
		t.Error("Retry of an unknown sequence number succeeded")
	}
	if err := q.Retry(1); err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(context.Background(), waitFor, func() bool { return q.Stats().DeadLettered == 2 }); err != nil {
		t.Fatalf("after retry: dead lettered %d, want 2", q.Stats().DeadLettered)
	}
}

// With no worker, Publish holds the feed back once the queue is full,
// drops nothing, and everything goes out when a worker comes.
func TestFullQueueHoldsPublisher(t *testing.T) {
	opts := DefaultOptions()
	opts.QueueLines = 10
	q, _ := start(t, opts)
	ls := lines("held", 25)
	published := make(chan uint64, 1)
	go func() { published <- q.Publish(ls) }()
	if err := poll.Until(context.Background(), waitFor, func() bool { st := q.Stats(); return st.FeedHeld && st.Waiting == 10 }); err != nil {
		t.Fatalf("stats %+v: want the feed held with 10 lines waiting", q.Stats())
	}
	select {
	case <-published:
		t.Fatal("Publish returned with the queue full")
	default:
	}
	want := 0
	for _, l := range ls[:10] {
		want += len(l)
	}
	if st := q.Stats(); st.WaitingBytes != want || st.OldestWaiting <= 0 {
		t.Errorf("waiting bytes %d, oldest %s; want %d and more than 0", st.WaitingBytes, st.OldestWaiting, want)
	}
	if _, err := q.TryPublish([]byte("sent")); err == nil {
		t.Error("TryPublish succeeded on a full queue")
	}
	got := make(chan string, len(ls))
	go dial(t, q).ackAll(got)
	for i, want := range ls {
		select {
		case l := <-got:
			if l != string(want) {
				t.Fatalf("line %d: got %q, want %q", i+1, l, want)
			}
		case <-time.After(waitFor):
			t.Fatalf("line %d never arrived", i+1)
		}
	}
	if seq := <-published; seq != 25 {
		t.Errorf("Publish returned %d, want 25", seq)
	}
}

// Drain waits for the lines in flight to be acknowledged, and reports
// what is left when it times out.
func TestDrain(t *testing.T) {
	q, _ := start(t, DefaultOptions())
	q.Publish(lines("d", 3))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if w, f := q.Drain(ctx); w != 3 || f != 0 {
		t.Errorf("Drain with no worker: %d waiting, %d in flight; want 3, 0", w, f)
	}
	got := make(chan string, 3)
	go dial(t, q).ackAll(got)
	ctx2, cancel2 := context.WithTimeout(context.Background(), waitFor)
	defer cancel2()
	if w, f := q.Drain(ctx2); w != 0 || f != 0 {
		t.Errorf("Drain: %d waiting, %d in flight; want none", w, f)
	}
}

// A feed line that reads like KEEP_ALIVE_ACK expects no ack (the original
// worker sends none) and is done once written; keep-alives are answered.
func TestKeepAliveAckLineAndKeepAlive(t *testing.T) {
	q, _ := start(t, DefaultOptions())
	a := dial(t, q)
	connected(t, q, 1)
	q.Publish([][]byte{[]byte("KEEP_ALIVE_ACK"), []byte("real")})
	a.read(t)
	a.read(t)
	a.ack(t, 4)
	fmt.Fprintf(a.conn, "KEEP_ALIVE\n")
	if l := a.read(t); l != "KEEP_ALIVE_ACK" {
		t.Fatalf("answer %q", l)
	}
	if err := poll.Until(context.Background(), waitFor, func() bool { st := q.Stats(); return st.Acked == 2 && st.InFlight == 0 }); err != nil {
		t.Fatalf("stats %+v", q.Stats())
	}
	if st := q.Stats(); st.Mismatched != 0 {
		t.Errorf("mismatched %d", st.Mismatched)
	}
}

func TestSeqRanges(t *testing.T) {
	var items []*item
	for _, s := range []uint64{3, 4, 5, 9, 11, 12} {
		items = append(items, &item{seq: s})
	}
	if got := seqRanges(items); got != "3-5,9,11-12" {
		t.Errorf("got %q", got)
	}
}

// FuzzSplitter checks that the lines cut from a stream are the same
// whatever the reads that bring it, and never longer than the limit.
func FuzzSplitter(f *testing.F) {
	f.Add([]byte("ACK_RECEIVED 12\nKEEP_ALIVE\r\nACK_RECEIVED 3\n"), 5)
	f.Add([]byte("no newline at all"), 1)
	f.Add([]byte("\n\n\r\n\r"), 2)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		const max = 16
		whole := func(chunks ...[]byte) ([]string, bool) {
			s := splitter{max: max}
			var out []string
			for _, c := range chunks {
				if s.feed(c, func(l []byte) {
					if len(l) > max {
						t.Fatalf("line of %d bytes, over %d", len(l), max)
					}
					out = append(out, string(l))
				}) {
					return out, true
				}
			}
			return out, false
		}
		want, wantLong := whole(data)
		if cut < 0 {
			cut = -cut
		}
		if len(data) > 0 {
			cut %= len(data) + 1
		} else {
			cut = 0
		}
		got, gotLong := whole(data[:cut], data[cut:])
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") || gotLong != wantLong {
			t.Fatalf("cut at %d: %q (long %v), whole: %q (long %v)", cut, got, gotLong, want, wantLong)
		}
		for _, l := range want {
			if strings.ContainsRune(l, '\n') {
				t.Fatalf("line %q holds a newline", l)
			}
		}
	})
}

// Lines from another queue are confirmed there only when a worker has
// acknowledged them, or set aside; Room counts the workers' windows.
func TestPublishFromConfirmsOnAck(t *testing.T) {
	opts := DefaultOptions()
	opts.MaxInFlight, opts.MaxDeliveries = 2, 3
	q, _ := start(t, opts)
	if n := q.Room(); n != 0 {
		t.Fatalf("Room with no worker = %d, want 0", n)
	}
	w := dial(t, q)
	connected(t, q, 1)
	if n := q.Room(); n != 2 {
		t.Fatalf("Room with one worker of window 2 = %d, want 2", n)
	}
	var mu sync.Mutex
	var results []bool
	done := func(acked bool) { mu.Lock(); results = append(results, acked); mu.Unlock() }
	got := func() []bool { mu.Lock(); defer mu.Unlock(); return append([]bool(nil), results...) }
	q.PublishFrom([][]byte{[]byte("one"), []byte("three")}, 0, done)
	if l := w.read(t); l != "one" {
		t.Fatalf("worker read %q, want one", l)
	}
	w.read(t)
	if n := q.Room(); n != 0 {
		t.Errorf("Room with the window full = %d, want 0", n)
	}
	if r := got(); len(r) != 0 {
		t.Fatalf("confirmed %v before any ack", r)
	}
	w.ack(t, 3)
	poll.Eventually(t, waitFor, func() bool { return len(got()) == 1 }, "the first line confirmed")
	select {
	case <-q.RoomChanged():
	default:
		t.Error("RoomChanged did not receive after an ack")
	}
	if r := got(); !r[0] {
		t.Errorf("confirmed %v, want acknowledged", r)
	}
	// A line that failed MaxDeliveries times elsewhere is set aside on
	// arrival, and confirmed as not acknowledged.
	q.PublishFrom([][]byte{[]byte("poison")}, 3, done)
	poll.Eventually(t, waitFor, func() bool { return len(got()) == 2 }, "the poison line confirmed")
	if r := got(); r[1] || len(q.DeadLetters()) != 1 {
		t.Errorf("confirmed %v with dead letters %v, want it set aside", r, q.DeadLetters())
	}
	w.ack(t, 5)
	poll.Eventually(t, waitFor, func() bool { return len(got()) == 3 }, "the second line confirmed")
}
