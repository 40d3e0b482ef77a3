package broadcast

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/poll"
)

// lineOf is the test feed's line number seq.
func lineOf(seq uint64) string { return fmt.Sprintf("line-%08d-%s", seq, strings.Repeat("x", 40)) }

// publishRange publishes the test feed's lines from through to.
func publishRange(s *Server, from, to uint64) {
	var batch [][]byte
	for seq := from; seq <= to; seq++ {
		batch = append(batch, []byte(lineOf(seq)))
		if len(batch) == 1000 || seq == to {
			s.Publish(batch)
			batch = batch[:0]
		}
	}
}

func TestRetentionReleasesWholeChunksByBytes(t *testing.T) {
	l := newLog(textCodec{})
	l.setRetention(Retention{Bytes: 3 * chunkSize})
	line := []byte(strings.Repeat("b", 99)) // 100 bytes encoded
	for range 20000 {                       // about 7.6 chunks
		l.append([][]byte{line})
	}
	r := l.retained()
	if r.Bytes > 3*chunkSize {
		t.Errorf("retained %d bytes, over the limit of %d", r.Bytes, 3*chunkSize)
	}
	if r.Bytes < 2*chunkSize {
		t.Errorf("retained only %d bytes; whole chunks up to the limit should stay", r.Bytes)
	}
	if r.First != l.tail.firstSeq || l.tail.startPos%100 != 0 {
		t.Errorf("retention starts at line %d (position %d), not at a whole chunk's first line %d", r.First, l.tail.startPos, l.tail.firstSeq)
	}
	if r.Last != 20000 || r.Lines != int64(r.Last-r.First+1) {
		t.Errorf("retained lines %d..%d (%d), want ..20000", r.First, r.Last, r.Lines)
	}
}

func TestRetentionByLinesAndAge(t *testing.T) {
	l := newLog(textCodec{})
	l.setRetention(Retention{Bytes: 1 << 30, Lines: 5000})
	line := []byte(strings.Repeat("l", 99))
	for range 20000 {
		l.append([][]byte{line})
	}
	if r := l.retained(); r.Lines > 5000 || r.Lines == 0 {
		t.Errorf("retained %d lines, want 1..5000", r.Lines)
	}

	l = newLog(textCodec{})
	l.setRetention(Retention{Bytes: 1 << 30, Age: time.Hour})
	for range 8000 { // three chunks or so
		l.append([][]byte{line})
	}
	if r := l.retained(); r.First != 1 {
		t.Fatalf("fresh lines released early: retained from %d", r.First)
	}
	l.mu.Lock()
	l.trimLocked(time.Now().Add(2 * time.Hour).UnixNano())
	l.mu.Unlock()
	if r := l.retained(); r.First != l.head.firstSeq || r.Last != 8000 {
		t.Errorf("two hours on, retained %d..%d; want only the chunk being appended to, %d..8000", r.First, r.Last, l.head.firstSeq)
	}
}

func TestRetentionOffKeepsNothingForResume(t *testing.T) {
	l := newLog(textCodec{})
	line := []byte(strings.Repeat("o", 99))
	for range 8000 {
		l.append([][]byte{line})
	}
	if l.tail != l.head {
		t.Fatal("retention off, yet the log holds chunks before its head")
	}
	l.mu.Lock()
	res, err := l.seekLocked(seekStart{seq: 1})
	l.mu.Unlock()
	if err != nil || res.gap != (gapRange{1, l.head.firstSeq - 1}) {
		t.Errorf("seek 1 with retention off: %+v, %v; want a gap up to %d", res, err, l.head.firstSeq-1)
	}
}

func TestSeekFindsEveryLine(t *testing.T) {
	for _, cd := range []codec{textCodec{}, seqCodec{}} {
		l := newLog(cd)
		l.setRetention(Retention{Bytes: 1 << 30})
		for seq := uint64(1); seq <= 12000; seq++ {
			l.append([][]byte{[]byte(lineOf(seq))})
		}
		for _, seq := range []uint64{1, 2, 4567, 5000, 11999, 12000} {
			l.mu.Lock()
			res, err := l.seekLocked(seekStart{seq: seq})
			l.mu.Unlock()
			if err != nil || !res.gap.empty() {
				t.Fatalf("%T seek %d: %v, gap %d..%d", cd, seq, err, res.gap.From, res.gap.To)
			}
			data, _ := res.cur.next()
			want := lineOf(seq) + "\n"
			if _, ok := cd.(seqCodec); ok {
				want = strconv.FormatUint(seq, 10) + " " + want
			}
			if !strings.HasPrefix(string(data), want) || res.cur.seq != seq {
				t.Fatalf("%T seek %d: cursor at line %d, bytes %.60q", cd, seq, res.cur.seq, data)
			}
		}
		l.mu.Lock()
		_, err := l.seekLocked(seekStart{seq: 12002})
		end, _ := l.seekLocked(seekStart{seq: 12001})
		l.mu.Unlock()
		if !errors.Is(err, errAhead) {
			t.Errorf("seek past the end: %v, want errAhead", err)
		}
		if data, _ := end.cur.next(); len(data) != 0 || end.cur.seq != 12001 {
			t.Errorf("seek to the next line: %q at %d, want the end", data, end.cur.seq)
		}
	}
}

// startSeqServer runs a sequenced server with retention until the test ends.
func startSeqServer(t *testing.T, lim Limits, r Retention) *Server {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewSequenced(ln, lim, logging.Discard())
	s.SetStream("teststream")
	s.SetRetention(r)
	runServer(t, s)
	return s
}

// dialStart connects to a sequenced server and sends start, unless empty.
func dialStart(t *testing.T, s *Server, start string) *testClient {
	t.Helper()
	c := dialNoWait(t, s)
	if start != "" {
		if _, err := c.Write([]byte(start + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func dialNoWait(t *testing.T, s *Server) *testClient {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &testClient{Conn: c, r: bufio.NewReaderSize(c, 1<<16)}
}

// expectLines reads want, line by line.
func (c *testClient) expectLines(t *testing.T, want ...string) {
	t.Helper()
	for _, w := range want {
		if got := c.readLine(t); got != w {
			t.Fatalf("got %q, want %q", got, w)
		}
	}
}

func seqLine(seq uint64) string { return strconv.FormatUint(seq, 10) + " " + lineOf(seq) }

func TestSequencedStartPoints(t *testing.T) {
	s := startSeqServer(t, testLimits(), Retention{Bytes: 1 << 30})
	publishRange(s, 1, 10)

	c := dialStart(t, s, "START - first")
	c.expectLines(t, "STREAM teststream 1", seqLine(1), seqLine(2))

	c = dialStart(t, s, "START teststream 7")
	c.expectLines(t, "STREAM teststream 7", seqLine(7), seqLine(8), seqLine(9), seqLine(10))

	live := dialStart(t, s, "START - next")
	live.expectLines(t, "STREAM teststream 11")

	other := dialStart(t, s, "START otherstream 7")
	other.expectLines(t, "CHANGED otherstream teststream", "STREAM teststream 1", seqLine(1))

	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 4 }, "four clients admitted")
	publishRange(s, 11, 11)
	live.expectLines(t, seqLine(11))
	c.expectLines(t, seqLine(11))
}

func TestSequencedBadStartIsRefused(t *testing.T) {
	s := startSeqServer(t, testLimits(), Retention{Bytes: 1 << 30})
	publishRange(s, 1, 3)
	for _, start := range []string{"HELLO", "START teststream 0", "START teststream 99", "START bad/stream 1", "START - since yesterday", "START \x00\x01 1"} {
		c := dialStart(t, s, start)
		got := c.readLine(t)
		if !strings.HasPrefix(got, "ERROR ") {
			t.Errorf("%q answered %q, want an ERROR line", start, got)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.r.ReadString('\n'); err == nil {
			t.Errorf("%q: the connection stays open after the ERROR", start)
		}
	}
	if st := s.Stats(); st.Protocol != 6 || st.Connected != 0 {
		t.Errorf("protocol errors %d, connected %d; want 6 and 0", st.Protocol, st.Connected)
	}
}

func TestSequencedSilentClientStartsLiveFromConnect(t *testing.T) {
	old := startTimeout
	startTimeout = 100 * time.Millisecond
	t.Cleanup(func() { startTimeout = old })
	s := startSeqServer(t, testLimits(), Retention{Bytes: 1 << 30})
	publishRange(s, 1, 5)
	c := dialStart(t, s, "")
	c.expectLines(t, "STREAM teststream 6")
	publishRange(s, 6, 6)
	c.expectLines(t, seqLine(6))
}

func TestSequencedGapWhenRetentionIsExceeded(t *testing.T) {
	s := startSeqServer(t, testLimits(), Retention{Bytes: 2 * chunkSize})
	publishRange(s, 1, 30000) // about 2.2 MB, far beyond two chunks
	first := s.Retained().First
	if first <= 1 {
		t.Fatalf("retention kept everything (from %d)", first)
	}
	c := dialStart(t, s, "START teststream 5")
	c.expectLines(t, fmt.Sprintf("STREAM teststream %d", first), fmt.Sprintf("GAP 5 %d", first-1), seqLine(first))
	if st := s.Stats(); st.Resumed != 1 || st.Gaps != 1 || st.GapLines != first-5 {
		t.Errorf("resumed %d, gaps %d of %d lines; want 1, 1 of %d", st.Resumed, st.Gaps, st.GapLines, first-5)
	}
}

func TestSequencedGapInTheStream(t *testing.T) {
	s := startSeqServer(t, testLimits(), Retention{Bytes: 1 << 30})
	publishRange(s, 1, 3)
	live := dialStart(t, s, "START - next")
	live.expectLines(t, "STREAM teststream 4")
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 1 }, "client admitted")
	if err := s.PublishAt(10, [][]byte{[]byte(lineOf(10))}); err != nil {
		t.Fatal(err)
	}
	if err := s.PublishAt(5, [][]byte{[]byte("behind")}); !errors.Is(err, ErrSequence) {
		t.Errorf("PublishAt behind the end: %v, want ErrSequence", err)
	}
	live.expectLines(t, "GAP 4 9", seqLine(10))
	c := dialStart(t, s, "START teststream 5")
	c.expectLines(t, "STREAM teststream 10", "GAP 5 9", seqLine(10))
}

// TestSequencedCatchUpHasNoSeam resumes clients from the start while the
// feed goes on: each must read every line once, in order, whatever the
// moment it passes from the retained lines to the live ones.
func TestSequencedCatchUpHasNoSeam(t *testing.T) {
	s := startSeqServer(t, testLimits(), Retention{Bytes: 1 << 30})
	const total = 60000
	publishRange(s, 1, 20000)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		c := dialStart(t, s, fmt.Sprintf("START teststream %d", 1+i*5000))
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			want := uint64(1 + i*5000)
			if l, err := c.r.ReadString('\n'); err != nil || l != fmt.Sprintf("STREAM teststream %d\n", want) {
				errs <- fmt.Errorf("client %d: answer %q, %v", i, l, err)
				return
			}
			for ; want <= total; want++ {
				l, err := c.r.ReadString('\n')
				if err != nil || l != seqLine(want)+"\n" {
					errs <- fmt.Errorf("client %d: got %q (%v), want line %d", i, l, err, want)
					return
				}
			}
		})
	}
	for seq := uint64(20001); seq <= total; seq += 500 {
		publishRange(s, seq, seq+499)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestSequencedAcksAreCumulative(t *testing.T) {
	s := startSeqServer(t, testLimits(), Retention{Bytes: 1 << 30})
	publishRange(s, 1, 10)
	c := dialStart(t, s, "START - first")
	c.expectLines(t, "STREAM teststream 1")
	for seq := uint64(1); seq <= 10; seq++ {
		c.expectLines(t, seqLine(seq))
	}
	fmt.Fprintf(c, "ACK 4\nACK 10\nACK 3\nACK 99\nKEEP_ALIVE\n")
	c.expectLines(t, "KEEP_ALIVE_ACK")
	cl := s.Clients()
	if len(cl) != 1 || cl[0].AcksGood != 2 || cl[0].AcksMismatched != 2 {
		t.Errorf("clients %+v; want 2 good acks (4, 10) and 2 bad (3 goes back, 99 never sent)", cl)
	}
}

func TestPlacementStartsTextClientWhereItsSlotStopped(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, testLimits(), logging.Discard())
	s.SetRetention(Retention{Bytes: 1 << 30})
	started := make(chan uint64, 1)
	ended := make(chan ClientEnd, 1)
	s.SetPlacer(func(net.Conn) Placement {
		return Placement{From: 4, Started: func(f uint64) { started <- f }, Ended: func(e ClientEnd) { ended <- e }}
	})
	runServer(t, s)
	publishRange(s, 1, 6)
	c := dialNoWait(t, s)
	c.expectLines(t, lineOf(4), lineOf(5), lineOf(6))
	if f := <-started; f != 4 {
		t.Errorf("started at %d, want 4", f)
	}
	fmt.Fprintf(c, "ACK_RECEIVED %d\nACK_RECEIVED %d\n", len(lineOf(4)), len(lineOf(5)))
	poll.Eventually(t, wait, func() bool {
		cl := s.Clients()
		return len(cl) == 1 && cl[0].AcksGood == 2
	}, "two acks matched")
	c.Close()
	select {
	case e := <-ended:
		if e.Acked != 5 || e.Sent != 6 {
			t.Errorf("ended %+v, want acked 5, sent 6", e)
		}
	case <-time.After(wait):
		t.Fatal("Ended never called")
	}
}

func TestLaggingClientInsideRetentionIsNoSlowConsumer(t *testing.T) {
	lim := testLimits()
	lim.QueueBytes = 256 << 10
	lim.QueueLines = 1 << 20
	s := startSeqServer(t, lim, Retention{Bytes: 8 << 20})
	stalled := dialStart(t, s, "START - next")
	stalled.expectLines(t, "STREAM teststream 1")
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 1 }, "client admitted")
	publishRange(s, 1, 40000) // about 3.6 MB: far past the queue limit, inside retention
	if st := s.Stats(); st.SlowConsumers != 0 {
		t.Fatalf("a client inside the retained lines was cut off as slow (%d)", st.SlowConsumers)
	}
	// 36 MB more: past what the sockets' buffers take, and the
	// retention passes the client.
	publishRange(s, 40001, 400000)
	poll.Eventually(t, wait, func() bool { return s.Stats().SlowConsumers == 1 }, "client behind the retention cut off")
}

// A sequenced client whose START is still awaited holds its place among
// max_clients: silent connections cannot get past the limit.
func TestSequencedAwaitedStartCountsAgainstMaxClients(t *testing.T) {
	old := startTimeout
	startTimeout = time.Minute // the first client stays awaited
	t.Cleanup(func() { startTimeout = old })
	lim := testLimits()
	lim.MaxClients = 1
	s := startSeqServer(t, lim, Retention{Bytes: 1 << 30})
	silent := dialStart(t, s, "")
	defer silent.Close()
	poll.Eventually(t, wait, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.starting == 1
	}, "the silent client awaited")
	second := dialStart(t, s, "START - next")
	if got := second.readLine(t); !strings.HasPrefix(got, "ERROR too many clients") {
		t.Fatalf("second client got %q, want the max_clients refusal", got)
	}
	if st := s.Stats(); st.Refused != 1 {
		t.Errorf("refused %d, want 1", st.Refused)
	}
}
