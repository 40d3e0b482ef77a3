package natscluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/natsfeed"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"
)

// full reports whether the long versions run (make nats-test); without
// it, `make test` runs a short version.
func full() bool { return os.Getenv("CHATTY_NATS_FULL") != "" }

// testLog logs, debug messages included, to the test when it runs
// verbosely; otherwise it keeps the log and prints its end only if the
// test fails, so that a failure in CI comes with what the publisher and
// consumer saw.
func testLog(t *testing.T, name string) *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	if testing.Verbose() {
		l.SetOutput(logWriter{t})
	} else {
		buf := harness.NewOutput()
		l.SetOutput(buf)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s log (last 8 KiB):\n%s", name, tail(buf.String(), 8192))
			}
		})
	}
	return logrus.NewEntry(l).WithField("component", name)
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// r3 is the R3 file stream of the tests.
func r3() config.NATSStream {
	s := config.Default().NATS.Stream
	s.Name, s.Subjects, s.Replicas = "FEED", []string{"chatty.feed"}, 3
	return s
}

// connect connects to every node and creates the stream, retrying while
// the cluster elects its leaders.
func connect(t *testing.T, c *Cluster) (*natsfeed.Conn, jetstream.Stream) {
	t.Helper()
	cfg := config.Default().NATS
	cfg.URLs = c.URLList()
	conn, err := natsfeed.Connect(cfg, natsfeed.ConnOptions{Name: t.Name(), AckTimeout: 2 * time.Second, Window: 32}, testLog(t, "conn"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := natsfeed.EnsureStream(ctx, conn.JS, r3(), testLog(t, "stream"))
	if err != nil {
		t.Fatal(err)
	}
	return conn, st
}

// leader returns the stream leader's node, polling while the stream has
// none (an election).
func leader(t *testing.T, c *Cluster, st jetstream.Stream) *Node {
	t.Helper()
	var name string
	poll.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		name = info.Cluster.Leader
		return true
	}, "the stream has a leader")
	n := c.Node(name)
	if n == nil {
		t.Fatalf("the stream's leader %q is no node of the cluster", name)
	}
	return n
}

func runPublisher(t *testing.T, conn *natsfeed.Conn, st jetstream.Stream, drain time.Duration) (*natsfeed.Publisher, func()) {
	t.Helper()
	p := natsfeed.NewPublisher(conn.JS, st, natsfeed.PublisherOptions{
		Subject: "chatty.feed", Window: 32, BufferBytes: 4 << 20, BatchLines: 64, BatchBytes: 64 << 10, Drain: drain,
		Elections: watchElections(t, conn),
	}, testLog(t, "publisher"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	stop := func() { cancel(); poll.Closed(t, done, 30*time.Second, "the publisher told to stop still runs") }
	t.Cleanup(stop)
	return p, stop
}

// checker is a subscriber that checks every line's number: each line
// once, in order, numbered consecutively.
type checker struct {
	mu    sync.Mutex
	next  uint64
	lines []string
	bad   []string
}

func (c *checker) sink(first uint64, lines [][]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next != 0 && first != c.next {
		c.bad = append(c.bad, fmt.Sprintf("batch numbered %d after %d", first, c.next-1))
	}
	if c.next == 0 && first != 1 {
		c.bad = append(c.bad, fmt.Sprintf("first line numbered %d, want 1", first))
	}
	for _, l := range lines {
		c.lines = append(c.lines, string(l))
	}
	c.next = first + uint64(len(lines))
	return nil
}

func (c *checker) count() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.lines) }

func (c *checker) result() ([]string, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...), append([]string(nil), c.bad...)
}

func runConsumer(t *testing.T, conn *natsfeed.Conn, o natsfeed.ConsumerOptions) (*natsfeed.Consumer, *checker) {
	t.Helper()
	o.Stream = "FEED"
	if o.Heartbeat == 0 {
		o.Heartbeat = time.Second
	}
	if o.Elections == nil {
		o.Elections = watchElections(t, conn)
	}
	ch := &checker{}
	cons := natsfeed.NewConsumer(conn.JS, o, ch.sink, testLog(t, "consumer"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cons.Run(ctx) }()
	t.Cleanup(func() { cancel(); poll.Closed(t, done, 30*time.Second, "the consumer told to stop still runs") })
	return cons, ch
}

// watchElections watches the stream's leader elections, as chattyd does.
func watchElections(t *testing.T, conn *natsfeed.Conn) *natsfeed.Elections {
	t.Helper()
	e, err := natsfeed.WatchElections(conn.NC, "FEED")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

func line(prefix string, i int) string { return fmt.Sprintf("%s %06d", prefix, i) }

// feedDeadline bounds how long feed waits for a publisher that holds the
// feed back, so that a stream that stops taking lines fails the test
// instead of hanging it.
const feedDeadline = 2 * time.Minute

// feed publishes n lines at about rate lines/s (0: as fast as taken).
func feed(t *testing.T, p *natsfeed.Publisher, prefix string, n, rate int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), feedDeadline)
	defer cancel()
	start := time.Now()
	for i := range n {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d) // pacing the producer, not synchronisation
			}
		}
		if err := p.Publish(ctx, [][]byte{[]byte(line(prefix, i))}); err != nil {
			if !errors.Is(err, natsfeed.ErrStopped) {
				t.Errorf("line %d of %d: %v", i+1, n, err)
			}
			return
		}
	}
}

func wantLines(t *testing.T, got []string, prefix string, n int) {
	t.Helper()
	if len(got) != n {
		t.Errorf("got %d lines, want %d", len(got), n)
	}
	for i := range min(n, len(got)) {
		if got[i] != line(prefix, i) {
			t.Errorf("line %d is %q, want %q", i+1, got[i], line(prefix, i))
			return
		}
	}
}

// The R3 stream is created while the cluster elects its leaders, and
// kept on three nodes.
func TestStreamCreatedR3(t *testing.T) {
	if !full() {
		t.Skip("the other tests create it too; make nats-test runs this")
	}
	c := Start(t)
	_, st := connect(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Config.Storage != jetstream.FileStorage || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Errorf("stream: %d replicas, storage %s, cluster %+v; want 3 file replicas", info.Config.Replicas, info.Config.Storage, info.Cluster)
	}
}

// A publish retried with the same message id is stored once.
func TestRetriedPublishStoredOnce(t *testing.T) {
	c := Start(t)
	conn, st := connect(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, _ := runPublisher(t, conn, st, 0)
	feed(t, p, "x", 3, 0)
	poll.Eventually(t, 20*time.Second, func() bool { return p.Stats().Lines == 3 }, "3 lines acknowledged")
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The same message again, as a publisher does after a lost ack.
	again := nats.NewMsg(m.Subject)
	again.Header, again.Data = m.Header, m.Data
	ack, err := conn.JS.PublishMsg(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate || ack.Sequence != 1 {
		t.Errorf("publish again: ack %+v, want a duplicate of sequence 1", ack)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("the stream holds %d messages, want 1", info.State.Msgs)
	}
}

// An edge started late with start: first replays the whole stream.
func TestLateEdgeReplaysStream(t *testing.T) {
	c := Start(t)
	conn, st := connect(t, c)
	p, _ := runPublisher(t, conn, st, 0)
	n := 2000
	feed(t, p, "l", n, 0)
	poll.Eventually(t, 30*time.Second, func() bool { return p.Stats().Lines == uint64(n) }, "every line acknowledged")
	_, ch := runConsumer(t, conn, natsfeed.ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 30*time.Second, func() bool { return ch.count() >= n }, "the whole stream replayed")
	got, bad := ch.result()
	wantLines(t, got, "l", n)
	if len(bad) > 0 {
		t.Errorf("numbering: %q", bad)
	}
}

// The stream leader killed and restarted while the feed runs: every line
// fed arrives once, in order, numbered 1..n, and the publisher's last
// line is n.
func TestLeaderKilledMidFeed(t *testing.T) {
	c := Start(t)
	conn, st := connect(t, c)
	p, _ := runPublisher(t, conn, st, 0)
	el := watchElections(t, conn)
	cons, ch := runConsumer(t, conn, natsfeed.ConsumerOptions{StartFirst: true, Elections: el})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("publisher %+v; consumer %+v", p.Stats(), cons.Stats())
		}
	})
	n, rate := 3000, 1000
	if full() {
		n, rate = 20000, 2000
	}
	fed := make(chan struct{})
	go func() { defer close(fed); feed(t, p, "l", n, rate) }()
	poll.Eventually(t, 30*time.Second, func() bool { return ch.count() >= n/4 }, "a quarter of the feed consumed")
	l := leader(t, c, st)
	t.Logf("killing the stream leader %s after %d lines", l.Name, ch.count())
	l.Kill()
	// nats.go's ordered consumer, re-created on the dead leader's name,
	// stalled here for over 30 s (see createTimeout in internal/natsfeed).
	poll.Eventually(t, 30*time.Second, func() bool { return ch.count() >= n/2 }, "half of the feed consumed with the leader dead")
	poll.Eventually(t, 30*time.Second, func() bool { return el.Seen() > 0 }, "the stream's election of a new leader seen")
	l.Start()
	<-fed
	poll.Eventually(t, 60*time.Second, func() bool { return ch.count() >= n }, "every line consumed")
	got, bad := ch.result()
	wantLines(t, got, "l", n)
	if len(bad) > 0 {
		t.Errorf("numbering: %q", bad)
	}
	if s := p.Stats(); s.LastSeq != uint64(n) || s.Lines != uint64(n) {
		t.Errorf("publisher: %d lines acknowledged, last %d; want %d", s.Lines, s.LastSeq, n)
	}
	t.Logf("publisher %+v; consumer %+v", p.Stats(), cons.Stats())
}

// NATS unreachable (every node down): the feed is held back once the
// buffer is full, nothing is dropped, and it all arrives once the
// cluster is back.
func TestClusterDownHoldsFeedBack(t *testing.T) {
	if !full() {
		t.Skip("internal/natsfeed tests this with one server; make nats-test runs it with the cluster")
	}
	c := Start(t)
	conn, st := connect(t, c)
	p := natsfeed.NewPublisher(conn.JS, st, natsfeed.PublisherOptions{
		Subject: "chatty.feed", Window: 8, BufferBytes: 4096, BatchLines: 16, BatchBytes: 4096,
	}, testLog(t, "publisher"))
	ctx, cancel := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-pubDone })
	feed(t, p, "l", 100, 0)
	poll.Eventually(t, 20*time.Second, func() bool { return p.Stats().Lines == 100 }, "100 lines acknowledged")
	for _, nd := range c.Nodes {
		nd.Kill()
	}
	taken := make(chan int, 1)
	go func() {
		i := 100
		for ; i < 2000; i++ {
			if err := p.Publish(ctx, [][]byte{[]byte(line("l", i))}); err != nil {
				break
			}
			select {
			case taken <- i:
			default:
				<-taken
				taken <- i
			}
		}
	}()
	poll.Eventually(t, 20*time.Second, func() bool { return p.Stats().HeldBack > 0 }, "the feed held back")
	if s := p.Stats(); s.Buffered > 4096 || s.Lines != 100 {
		t.Fatalf("with NATS down: %+v; want at most 4096 bytes held and nothing more acknowledged", s)
	}
	for _, nd := range c.Nodes {
		nd.Start()
	}
	poll.Eventually(t, 90*time.Second, func() bool { return p.Stats().Lines == 2000 }, "every line acknowledged once the cluster is back")
	_, ch := runConsumer(t, conn, natsfeed.ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 30*time.Second, func() bool { return ch.count() >= 2000 }, "2000 lines consumed")
	got, bad := ch.result()
	wantLines(t, got, "l", 2000)
	if len(bad) > 0 {
		t.Errorf("numbering: %q", bad)
	}
}

// A publisher stopped without draining (as if killed) and another
// started: no number is used twice, the numbering has no hole, and the
// first publisher's lines that arrived are a prefix of what it was fed.
func TestKilledPublisherReusesNoNumber(t *testing.T) {
	c := Start(t)
	conn, st := connect(t, c)
	p1, kill := runPublisher(t, conn, st, 0)
	fed := make(chan struct{})
	go func() { defer close(fed); feed(t, p1, "a", 200000, 0) }()
	poll.Eventually(t, 30*time.Second, func() bool { return p1.Stats().Lines >= 1000 }, "1000 lines of the first acknowledged")
	kill()
	<-fed // Publish fails once the publisher is gone
	lost := p1.Stats().Abandoned
	p2, _ := runPublisher(t, conn, st, 0)
	feed(t, p2, "b", 500, 0)
	poll.Eventually(t, 30*time.Second, func() bool { return p2.Stats().Lines == 500 }, "the second's lines acknowledged")
	_, ch := runConsumer(t, conn, natsfeed.ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 30*time.Second, func() bool { return uint64(ch.count()) >= p2.Stats().LastSeq }, "every stored line consumed")
	got, bad := ch.result()
	if len(bad) > 0 {
		t.Errorf("numbering: %q", bad)
	}
	var as []string
	for _, l := range got {
		if strings.HasPrefix(l, "a ") {
			as = append(as, l)
		}
	}
	wantLines(t, as, "a", len(as))
	wantLines(t, got[len(as):], "b", 500)
	if len(as) < 1000 {
		t.Errorf("only %d lines of the first publisher stored, it had 1000 acknowledged", len(as))
	}
	if len(as) >= 200000 {
		t.Errorf("the first publisher stored all it was fed before it was killed: the test proves nothing")
	}
	t.Logf("first publisher: %d lines stored, %d abandoned at its end", len(as), lost)
}
