package workqueue

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/wire"
)

const testStream = "teststream1"

// seqWorker is a worker of the sequenced listener on a raw connection.
type seqWorker struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialSeq connects to the sequenced listener and sends start (nothing if
// empty).
func dialSeq(t *testing.T, q *Queue, start string) *seqWorker {
	t.Helper()
	conn, err := net.Dial("tcp", q.SequencedAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if start != "" {
		if _, err := conn.Write([]byte(start + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	return &seqWorker{conn: conn, r: bufio.NewReader(conn)}
}

// started is dialSeq with START - next, having read the STREAM answer.
func started(t *testing.T, q *Queue) *seqWorker {
	t.Helper()
	w := dialSeq(t, q, "START - next")
	if l := w.read(t); !strings.HasPrefix(l, "STREAM "+testStream+" ") {
		t.Fatalf("answer to START - next: %q, want STREAM %s <next>", l, testStream)
	}
	return w
}

func (w *seqWorker) read(t *testing.T) string {
	t.Helper()
	w.conn.SetReadDeadline(time.Now().Add(waitFor))
	l, err := w.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSuffix(l, "\n")
}

// readLine reads one "<seq> <line>" and returns both.
func (w *seqWorker) readLine(t *testing.T) (uint64, string) {
	t.Helper()
	l := w.read(t)
	sl := wire.ParseServerLine([]byte(l))
	if sl.Kind != wire.FeedLine {
		t.Fatalf("got %q, want <seq> <line>", l)
	}
	return sl.Seq, string(sl.Text)
}

func (w *seqWorker) ack(t *testing.T, seq uint64) {
	t.Helper()
	if _, err := w.conn.Write(wire.AppendSeqAck(nil, seq)); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

// ackAll acknowledges every line it reads with ACK <seq>, recording the
// lines, until its connection ends.
func (w *seqWorker) ackAll(got chan<- string) {
	bw := bufio.NewWriter(w.conn)
	for {
		l, err := w.r.ReadString('\n')
		if err != nil {
			return
		}
		sl := wire.ParseServerLine([]byte(strings.TrimSuffix(l, "\n")))
		if sl.Kind != wire.FeedLine {
			got <- "not a feed line: " + l
			return
		}
		got <- string(sl.Text)
		bw.Write(wire.AppendSeqAck(nil, sl.Seq))
		if w.r.Buffered() == 0 && bw.Flush() != nil {
			return
		}
	}
}

func waitStats(t *testing.T, q *Queue, what string, ok func(Stats) bool) {
	t.Helper()
	if err := poll.Until(context.Background(), waitFor, func() bool { return ok(q.Stats()) }); err != nil {
		t.Fatalf("stats %+v: never %s", q.Stats(), what)
	}
}

// One queue for both listeners: each line goes to one worker of either,
// a sequenced worker is sent "<seq> <line>" with the line's own number,
// and both kinds take a share.
func TestSequencedAndTextWorkersShareTheQueue(t *testing.T) {
	q, _ := startQueue(t, DefaultOptions(), true)
	const n = 4000
	got := make(chan string, 2*n)
	for range 2 {
		go dial(t, q).ackAll(got)
		go started(t, q).ackAll(got)
	}
	connected(t, q, 4)
	all := lines("job", n)
	q.Publish(all)
	seen := map[string]int{}
	for range n {
		select {
		case l := <-got:
			seen[l]++
		case <-time.After(waitFor):
			t.Fatalf("%d of %d lines received", len(seen), n)
		}
	}
	for _, l := range all {
		if seen[string(l)] != 1 {
			t.Fatalf("%q received %d times", l, seen[string(l)])
		}
	}
	waitStats(t, q, "every line acknowledged", func(st Stats) bool { return st.Acked == n })
	kinds := map[Listener]uint64{}
	for _, w := range q.Workers() {
		kinds[w.Listener] += w.Acked
		if w.Acked == 0 {
			t.Errorf("worker %d (%s) got no line", w.ID, w.Listener)
		}
	}
	if kinds[Text]+kinds[Sequenced] != n || kinds[Sequenced] == 0 {
		t.Errorf("acked by listener: %v", kinds)
	}
	if st := q.Stats(); st.Redeliveries != 0 || st.Mismatched != 0 || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The number a sequenced worker is sent is the line's sequence number,
// as Publish returns it.
func TestSequencedLineNumbers(t *testing.T) {
	q, _ := startQueue(t, DefaultOptions(), true)
	q.Publish(lines("before", 2))
	w := started(t, q) // told STREAM ... 3; lines 1 and 2 wait still
	last := q.Publish([][]byte{[]byte("third")})
	want := []string{"before 000001 ", "before 000002 x", "third"}
	for i, text := range want {
		seq, l := w.readLine(t)
		if seq != uint64(i+1) || l != text {
			t.Fatalf("line %d: %d %q, want %d %q", i+1, seq, l, i+1, text)
		}
	}
	if last != 3 {
		t.Fatalf("Publish returned %d, want 3", last)
	}
}

// ACK <seq> completes exactly that line, not the ones before it: a worker
// that acks out of order keeps the others, and loses them to another
// worker when it goes.
func TestSequencedAckIsPerLine(t *testing.T) {
	q, hook := startQueue(t, DefaultOptions(), true)
	a := started(t, q)
	connected(t, q, 1)
	q.Publish(lines("p", 4))
	var seqs []uint64
	for range 4 {
		seq, _ := a.readLine(t)
		seqs = append(seqs, seq)
	}
	a.ack(t, seqs[2])
	a.ack(t, seqs[0])
	waitStats(t, q, "two acks", func(st Stats) bool { return st.Acked == 2 })
	if st := q.Stats(); st.InFlight != 2 || st.Mismatched != 0 {
		t.Fatalf("in flight %d, mismatched %d; want 2 and 0", st.InFlight, st.Mismatched)
	}
	if w := q.Workers(); len(w) != 1 || w[0].InFlight != 2 || w[0].Listener != Sequenced {
		t.Fatalf("workers %+v", w)
	}
	b := dial(t, q)
	connected(t, q, 2)
	a.conn.Close()
	// b gets lines 2 and 4, the two a did not acknowledge, in order.
	for _, i := range []int{1, 3} {
		if l := b.read(t); l != string(lines("p", 4)[i]) {
			t.Fatalf("b got %q, want %q", l, lines("p", 4)[i])
		}
		b.ack(t, len(lines("p", 4)[i]))
	}
	waitStats(t, q, "every line acknowledged", func(st Stats) bool { return st.Acked == 4 && st.InFlight == 0 })
	found := false
	for _, e := range hook.AllEntries() {
		if e.Message == "Connection closed" && e.Data["requeued"] == "2,4" {
			found = true
		}
	}
	if !found {
		t.Error("no Connection closed log line with requeued=2,4")
	}
}

// An ack of a number the worker does not hold (never sent, sent to
// another, or acknowledged already) is counted and completes nothing:
// the line stays held, and after the ack timeout goes to another worker.
func TestSequencedMismatchedAck(t *testing.T) {
	opts := DefaultOptions()
	// Long enough that line two is still held when the mismatched acks
	// have been counted, on a loaded machine too.
	opts.AckTimeout = 2 * time.Second
	q, _ := startQueue(t, opts, true)
	a := started(t, q)
	connected(t, q, 1)
	q.Publish([][]byte{[]byte("one"), []byte("two")})
	s1, _ := a.readLine(t)
	s2, _ := a.readLine(t)
	a.ack(t, s1)
	a.ack(t, s1)  // again
	a.ack(t, 999) // never sent
	waitStats(t, q, "two mismatched acks", func(st Stats) bool { return st.Mismatched == 2 })
	if st := q.Stats(); st.Acked != 1 || st.InFlight != 1 {
		t.Fatalf("acked %d, in flight %d; want 1 and 1", st.Acked, st.InFlight)
	}
	b := started(t, q)
	seq, l := b.readLine(t)
	if seq != s2 || l != "two" {
		t.Fatalf("b got %d %q, want %d two, redelivered", seq, l, s2)
	}
	b.ack(t, seq)
	waitStats(t, q, "line two acknowledged", func(st Stats) bool { return st.Acked == 2 && st.InFlight == 0 })
	if st := q.Stats(); st.Redeliveries != 1 || st.AckTimeouts != 1 {
		t.Errorf("redeliveries %d, ack timeouts %d; want 1 and 1", st.Redeliveries, st.AckTimeouts)
	}
}

// A feed line that reads KEEP_ALIVE_ACK is "<seq> KEEP_ALIVE_ACK" to a
// sequenced worker: it expects an ack like any other, and a KEEP_ALIVE
// is answered.
func TestSequencedKeepAlive(t *testing.T) {
	q, _ := startQueue(t, DefaultOptions(), true)
	a := started(t, q)
	connected(t, q, 1)
	q.Publish([][]byte{[]byte(wire.KeepAliveAck)})
	seq, l := a.readLine(t)
	if l != wire.KeepAliveAck {
		t.Fatalf("got %q", l)
	}
	if st := q.Stats(); st.InFlight != 1 {
		t.Fatalf("in flight %d before the ack, want 1", st.InFlight)
	}
	fmt.Fprintf(a.conn, "KEEP_ALIVE\n")
	if got := a.read(t); got != wire.KeepAliveAck {
		t.Fatalf("answer to KEEP_ALIVE: %q", got)
	}
	a.ack(t, seq)
	waitStats(t, q, "the line acknowledged", func(st Stats) bool { return st.Acked == 1 && st.InFlight == 0 && st.KeepAlives == 1 })
}

// What each START gets: next is served, with CHANGED for another stream;
// a resume is refused with ERROR, as is a line that is no START; silence
// is START - next.
func TestSequencedStart(t *testing.T) {
	old := startTimeout
	startTimeout = 200 * time.Millisecond
	t.Cleanup(func() { startTimeout = old })
	opts := DefaultOptions()
	opts.MaxDeliveries = 100 // each case's worker leaves holding the line
	q, _ := startQueue(t, opts, true)
	q.Publish([][]byte{[]byte("waiting")})
	cases := []struct {
		name, start string
		want        []string // the answer's lines, by prefix
		worker      bool     // admitted as a worker
	}{
		{"next", "START - next", []string{"STREAM " + testStream + " 2"}, true},
		{"next of this stream", "START " + testStream + " next", []string{"STREAM " + testStream + " 2"}, true},
		{"next of another stream", "START otherstream next", []string{"CHANGED otherstream " + testStream, "STREAM " + testStream + " 2"}, true},
		{"silence", "", []string{"STREAM " + testStream + " 2"}, true},
		{"first", "START - first", []string{"ERROR the sequenced listener is a work queue (broadcast.delivery: one), which keeps no history to resume from; send START - next"}, false},
		{"from a number", "START " + testStream + " 1", []string{"ERROR the sequenced listener is a work queue"}, false},
		{"since", "START - since 2026-12-06T21:00:00Z", []string{"ERROR the sequenced listener is a work queue"}, false},
		{"garbage", "HELLO", []string{"ERROR bad START line: want START"}, false},
		{"bad number", "START - 0", []string{`ERROR bad START line: "0" is no sequence number`}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := q.Stats()
			w := dialSeq(t, q, c.start)
			for _, want := range c.want {
				if l := w.read(t); !strings.HasPrefix(l, want) {
					t.Fatalf("answer %q, want %q", l, want)
				}
			}
			if !c.worker {
				w.conn.SetReadDeadline(time.Now().Add(waitFor))
				if b, err := w.r.ReadByte(); err == nil {
					t.Fatalf("after ERROR, read %q; want the connection closed", b)
				}
				if st := q.Stats(); st.BadStarts != before.BadStarts+1 || st.Accepted != before.Accepted {
					t.Fatalf("bad starts %d, accepted %d; want %d and %d", st.BadStarts, st.Accepted, before.BadStarts+1, before.Accepted)
				}
				return
			}
			// The worker is admitted and gets the waiting line.
			seq, l := w.readLine(t)
			if seq != 1 || l != "waiting" {
				t.Fatalf("got %d %q, want 1 waiting", seq, l)
			}
			w.conn.Close()
			connected(t, q, 0)
		})
	}
}

// Run's end closes the connections still starting, without waiting for
// their START (the goroutine check of startQueue holds it to that).
func TestSequencedStartingClosedByRun(t *testing.T) {
	old := startTimeout
	startTimeout = time.Hour
	t.Cleanup(func() { startTimeout = old })
	var conn net.Conn
	t.Cleanup(func() { conn.Close() }) // after the queue's cleanup
	q, _ := startQueue(t, DefaultOptions(), true)
	conn, err := net.Dial("tcp", q.SequencedAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(context.Background(), waitFor, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.starting) == 1
	}); err != nil {
		t.Fatal("the connection is never starting")
	}
}

// removeAt keeps the other elements in order, wherever the ring wraps.
func TestRingRemoveAt(t *testing.T) {
	for head := range 20 {
		for i := range 10 {
			var r ring[int]
			for range head {
				r.pushBack(-1)
			}
			for range head {
				r.popFront()
			}
			for v := range 10 {
				r.pushBack(v)
			}
			r.removeAt(i)
			var got []string
			for j := range r.len() {
				got = append(got, strconv.Itoa(r.at(j)))
			}
			var want []string
			for v := range 10 {
				if v != i {
					want = append(want, strconv.Itoa(v))
				}
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("head %d, removeAt(%d): %v, want %v", head, i, got, want)
			}
		}
	}
}

// readStartLine never reads past the first "\n", nor more than a START's
// length, and never panics, whatever the bytes and however they are cut.
func FuzzReadStartLine(f *testing.F) {
	for _, s := range []string{"START - next\n", "START - next\r\nACK 5\n", "START abc 12\nKEEP_ALIVE\n", "\n", "", strings.Repeat("x", 300)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		line, err := readStartLine(r)
		consumed := len(in) - r.Len()
		if err == nil {
			if consumed != len(line)+1 || !bytes.Equal(in[:consumed], append(bytes.Clone(line), '\n')) {
				t.Fatalf("line %q, consumed %d of %q", line, consumed, in)
			}
			if len(line) > wire.MaxStartLine+1 {
				t.Fatalf("a line of %d bytes", len(line))
			}
			if req, err := wire.ParseStart(line); err == nil && !bytes.Contains(line, []byte(wire.Start)) {
				t.Fatalf("%q parsed as %+v", line, req)
			}
		} else if bytes.IndexByte(in[:consumed], '\n') >= 0 {
			t.Fatalf("error %v after reading a newline: %q", err, in[:consumed])
		}
		for _, l := range bytes.Split(in, []byte("\n")) {
			kind, seq := parseSeqClientLine(l)
			if kind == wire.Ack && !bytes.Equal(wire.TrimCR(l), wire.AppendSeqAck(nil, seq)[:len(wire.AppendSeqAck(nil, seq))-1]) && !bytes.HasPrefix(l, []byte("ACK 0")) {
				t.Fatalf("%q parsed as ACK %d", l, seq)
			}
		}
	})
}

// max_clients counts the workers of both listeners: over it, a sequenced
// connection is closed before its START is read.
func TestSequencedMaxClients(t *testing.T) {
	opts := DefaultOptions()
	opts.MaxClients = 1
	q, _ := startQueue(t, opts, true)
	dial(t, q)
	connected(t, q, 1)
	w := dialSeq(t, q, "START - next")
	w.conn.SetReadDeadline(time.Now().Add(waitFor))
	if l, err := w.r.ReadString('\n'); err == nil {
		t.Fatalf("over max_clients the sequenced connection was answered %q", l)
	}
	if st := q.Stats(); st.Refused != 1 || st.Connected != 1 {
		t.Fatalf("refused %d, connected %d; want 1 and 1", st.Refused, st.Connected)
	}
}
