package natsfeed

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeQueue is a local queue whose test acknowledges lines by hand.
type fakeQueue struct {
	mu      sync.Mutex
	room    int
	lines   []string
	fails   []int
	done    []func(bool)
	changed chan struct{}
}

func newFakeQueue(room int) *fakeQueue {
	return &fakeQueue{room: room, changed: make(chan struct{}, 1)}
}

func (q *fakeQueue) PublishFrom(lines [][]byte, failures int, done func(bool)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range lines {
		q.lines = append(q.lines, string(l))
		q.fails = append(q.fails, failures)
		q.done = append(q.done, done)
		q.room--
	}
}

func (q *fakeQueue) Room() int { q.mu.Lock(); defer q.mu.Unlock(); return max(q.room, 0) }

func (q *fakeQueue) RoomChanged() <-chan struct{} { return q.changed }

func (q *fakeQueue) got() ([]string, []int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.lines), slices.Clone(q.fails)
}

// finish tells the consumer that line i was acknowledged (or set aside).
func (q *fakeQueue) finish(i int, acked bool) {
	q.mu.Lock()
	done := q.done[i]
	q.room++
	q.mu.Unlock()
	done(acked)
	select {
	case q.changed <- struct{}{}:
	default:
	}
}

func testWorkQueue() config.NATSWorkQueue {
	w := config.Default().NATS.WorkQueue
	w.AckWait = time.Second
	return w
}

// runWork runs a work consumer on c into q until stop.
func runWork(t *testing.T, c *Conn, q LocalQueue) (*WorkConsumer, func()) {
	t.Helper()
	w := testWorkQueue()
	wc := NewWorkConsumer(c.JS, q, WorkOptions{Stream: w.Stream, Consumer: WorkConsumerConfig(w, 5), MaxPull: 64, Acks: 4}, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); wc.Run(ctx) }()
	stop := func() { cancel(); poll.Closed(t, done, 30*time.Second, "the work consumer told to stop still runs") }
	t.Cleanup(stop)
	return wc, stop
}

// A line pulled from the work-queue stream is acknowledged to JetStream
// only when the local queue says a worker acknowledged it; a line whose
// chattyd is lost goes, after the ack wait, to another, counted as a
// failed delivery; a line set aside is terminated.
func TestWorkLineAckedOnlyAfterWorker(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	startServer(t, addr, t.TempDir())
	w := testWorkQueue()
	c, _ := connect(t, "nats://"+addr, testStream())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := EnsureWorkStream(ctx, c.JS, WorkStreamConfig(w, testStream()), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := runPublisher(t, c, st, PublisherOptions{Subject: w.Subject, BatchLines: 1, Unnumbered: true})
	if err := p.Publish(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")}); err != nil {
		t.Fatal(err)
	}
	msgs := func() uint64 {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	poll.Eventually(t, 10*time.Second, func() bool { return msgs() == 3 }, "three lines in the work-queue stream")

	// Edge A on a connection of its own, which the test closes to lose it.
	ca, _ := connect(t, "nats://"+addr, testStream())
	qa := newFakeQueue(3)
	a, _ := runWork(t, ca, qa)
	poll.Eventually(t, 10*time.Second, func() bool { l, _ := qa.got(); return len(l) == 3 }, "edge A pulled three lines")
	// Nothing is acknowledged while no worker acknowledged: not after
	// twice the ack wait's renewal either, as A renews it.
	deadline := time.Now().Add(2 * w.AckWait)
	for time.Now().Before(deadline) {
		if n := msgs(); n != 3 || a.Stats().Acked != 0 {
			t.Fatalf("before any worker ack: %d lines in the stream, %d acked; want 3 and 0", n, a.Stats().Acked)
		}
		time.Sleep(50 * time.Millisecond) // sampling, not synchronising
	}
	if l, _ := qa.got(); len(l) != 3 {
		t.Fatalf("edge A got %q, want its three lines only once (renewed, not redelivered)", l)
	}
	qa.finish(0, true)
	poll.Eventually(t, 10*time.Second, func() bool { return msgs() == 2 && a.Stats().Acked == 1 }, "the acknowledged line gone from the stream")

	// A is lost with b and c: B gets them after the ack wait, with one
	// failed delivery each.
	lost := time.Now()
	ca.Close()
	qb := newFakeQueue(10)
	cb, _ := connect(t, "nats://"+addr, testStream())
	b, _ := runWork(t, cb, qb)
	poll.Eventually(t, 20*time.Second, func() bool { l, _ := qb.got(); return len(l) == 2 }, "edge B got the lost edge's lines")
	// A renewed each line every third of the ack wait, and a renewal
	// may come late on a loaded machine: the lines come back at least
	// some way into the ack wait after A was lost, never at once.
	if since := time.Since(lost); since < w.AckWait/5 {
		t.Errorf("edge B got the lines %s after A was lost, well before the ack wait (%s)", since, w.AckWait)
	}
	// Each line comes back when its own ack wait ends, and A renewed
	// them one at a time, so c may come before b (README.md: a
	// redelivered line may be handled after later ones).
	lines, fails := qb.got()
	if !slices.Equal(slices.Sorted(slices.Values(lines)), []string{"b", "c"}) || !slices.Equal(fails, []int{1, 1}) {
		t.Errorf("edge B got %q with failures %v, want b and c with [1 1]", lines, fails)
	}
	qb.finish(0, true)
	qb.finish(1, false) // set aside
	poll.Eventually(t, 10*time.Second, func() bool { return msgs() == 0 }, "the stream empty")
	// The double ack's answer may come after the stream dropped the line.
	poll.Until(ctx, 5*time.Second, func() bool { return b.Stats().Acked == 1 })
	if s := b.Stats(); s.Acked != 1 || s.Terminated != 1 || s.Redelivered != 2 || s.Held != 0 {
		t.Errorf("edge B: %+v, want 1 acked, 1 terminated, 2 redelivered, none held", s)
	}
	cons, err := c.JS.Consumer(ctx, w.Stream, w.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.AckPolicy != jetstream.AckExplicitPolicy || info.Config.MaxDeliver != 6 || info.NumAckPending != 0 {
		t.Errorf("consumer %+v with %d pending acks; want explicit acks, MaxDeliver 6, none pending", info.Config, info.NumAckPending)
	}
}
