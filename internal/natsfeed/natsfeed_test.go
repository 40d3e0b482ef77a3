package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"
)

func testLog(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(testWriter{t})
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string { return harness.FreeAddr(t) }

// startServer runs an embedded server on addr with its store in dir.
func startServer(t *testing.T, addr, dir string) *Embedded {
	t.Helper()
	e, err := NewEmbedded(config.NATSEmbedded{Enabled: true, Listen: addr, StoreDir: dir}, testLog(t).WithField("component", "nats-server"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

// testStream is the configuration of the tests' stream.
func testStream() config.NATSStream {
	s := config.Default().NATS.Stream
	s.Name = "TEST"
	s.Subjects = []string{"test.feed"}
	return s
}

// connect connects to url and returns the connection and the stream.
func connect(t *testing.T, url string, s config.NATSStream) (*Conn, jetstream.Stream) {
	t.Helper()
	cfg := config.Default().NATS
	cfg.URLs = []string{url}
	cfg.Stream = s
	c, err := Connect(cfg, ConnOptions{Name: t.Name(), AckTimeout: time.Second, Window: 16}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := EnsureStream(ctx, c.JS, s, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return c, st
}

// runPublisher runs a publisher until the test ends.
func runPublisher(t *testing.T, c *Conn, st jetstream.Stream, o PublisherOptions) (*Publisher, func()) {
	t.Helper()
	if o.Subject == "" {
		o.Subject = "test.feed"
	}
	if o.Window == 0 {
		o.Window = 16
	}
	if o.BufferBytes == 0 {
		o.BufferBytes = 1 << 20
	}
	if o.BatchLines == 0 {
		o.BatchLines = 64
	}
	if o.BatchBytes == 0 {
		o.BatchBytes = 64 << 10
	}
	p := NewPublisher(c.JS, st, o, testLog(t).WithField("publisher", t.Name()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	stop := func() { cancel(); poll.Closed(t, done, 30*time.Second, "the publisher told to stop still runs") }
	t.Cleanup(stop)
	return p, stop
}

// collector is a sink that records every line with its number.
type collector struct {
	mu    sync.Mutex
	first uint64
	lines []string
	calls int
	bad   []string // numbering problems
}

func (c *collector) sink(first uint64, lines [][]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == 0 {
		c.first = first
	} else if want := c.first + uint64(len(c.lines)); first != want {
		c.bad = append(c.bad, fmt.Sprintf("batch at %d, want %d", first, want))
	}
	for _, l := range lines {
		c.lines = append(c.lines, string(l))
	}
	c.calls++
	return nil
}

func (c *collector) snapshot() (uint64, []string, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first, append([]string(nil), c.lines...), append([]string(nil), c.bad...)
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

func runConsumer(t *testing.T, c *Conn, o ConsumerOptions) (*Consumer, *collector) {
	t.Helper()
	if o.Stream == "" {
		o.Stream = "TEST"
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = time.Second
	}
	col := &collector{}
	cons := NewConsumer(c.JS, o, col.sink, testLog(t).WithField("consumer", t.Name()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cons.Run(ctx) }()
	t.Cleanup(func() { cancel(); poll.Closed(t, done, 30*time.Second, "the consumer told to stop still runs") })
	return cons, col
}

// carriesOn waits for cons to start over after what happened (why),
// publishes n more lines "l <i>" after the had ones, and checks that all
// of them came, from 1, in order, once each.
func carriesOn(t *testing.T, p *Publisher, cons *Consumer, col *collector, had, n int, why string) {
	t.Helper()
	poll.Eventually(t, 30*time.Second, func() bool { return cons.Stats().Restarts > 0 }, "the consumer started over after "+why)
	publishLines(t, p, "l", had, n)
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= had+n }, fmt.Sprintf("%d lines consumed", had+n))
	first, lines, bad := col.snapshot()
	if first != 1 || !equal(lines, linesOf("l", 0, had+n)) || len(bad) > 0 {
		t.Errorf("consumed from %d, %d lines %q, problems %q; want %d lines from 1 in order, once each", first, len(lines), lines, bad, had+n)
	}
}

func publishLines(t *testing.T, p *Publisher, prefix string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := p.Publish(context.Background(), [][]byte{[]byte(fmt.Sprintf("%s %d", prefix, i))}); err != nil {
			t.Fatal(err)
		}
	}
}

func linesOf(prefix string, from, n int) []string {
	var out []string
	for i := from; i < from+n; i++ {
		out = append(out, fmt.Sprintf("%s %d", prefix, i))
	}
	return out
}

func equal(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n") && len(a) == len(b)
}

// Lines published in batches come back numbered from 1, consecutively,
// in order, to an edge that starts at the stream's first message.
func TestPublishAndConsume(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, st := connect(t, e.ClientURL(), testStream())
	p, _ := runPublisher(t, c, st, PublisherOptions{BatchLines: 7})
	publishLines(t, p, "line", 0, 500)
	poll.Eventually(t, 10*time.Second, func() bool { return p.Stats().Lines == 500 }, "500 lines acknowledged")
	if s := p.Stats(); s.LastSeq != 500 || s.Batches < 500/7 || s.Pending != 0 || s.Buffered != 0 {
		t.Errorf("publisher stats %+v, want 500 lines in at least %d batches, last 500, nothing pending", s, 500/7)
	}

	_, col := runConsumer(t, c, ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 500 }, "500 lines consumed")
	first, lines, bad := col.snapshot()
	if first != 1 || !equal(lines, linesOf("line", 0, 500)) || len(bad) > 0 {
		t.Errorf("consumed from %d, %d lines, problems %q; want 500 lines from 1 in order", first, len(lines), bad)
	}
}

// Two publishers on one stream never store the same number: every line
// of both is numbered once, consecutively, each publisher's in its order.
func TestTwoPublishersShareNoNumber(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c1, st1 := connect(t, e.ClientURL(), testStream())
	c2, st2 := connect(t, e.ClientURL(), testStream())
	p1, _ := runPublisher(t, c1, st1, PublisherOptions{BatchLines: 5})
	p2, _ := runPublisher(t, c2, st2, PublisherOptions{BatchLines: 3})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); publishLines(t, p1, "a", 0, 1000) }()
	go func() { defer wg.Done(); publishLines(t, p2, "b", 0, 1000) }()
	wg.Wait()
	poll.Eventually(t, 20*time.Second, func() bool { return p1.Stats().Lines == 1000 && p2.Stats().Lines == 1000 }, "both publishers' lines acknowledged")

	_, col := runConsumer(t, c1, ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 2000 }, "2000 lines consumed")
	first, lines, bad := col.snapshot()
	if first != 1 || len(lines) != 2000 || len(bad) > 0 {
		t.Fatalf("consumed %d lines from %d, problems %q; want 2000 from 1", len(lines), first, bad)
	}
	var as, bs []string
	for _, l := range lines {
		if strings.HasPrefix(l, "a ") {
			as = append(as, l)
		} else {
			bs = append(bs, l)
		}
	}
	if !equal(as, linesOf("a", 0, 1000)) || !equal(bs, linesOf("b", 0, 1000)) {
		t.Errorf("each publisher's lines should arrive once, in order: got %d a, %d b", len(as), len(bs))
	}
	if p1.Stats().Resyncs+p2.Stats().Resyncs <= 2 {
		t.Errorf("resyncs %d and %d: the publishers never raced, so the test proves nothing", p1.Stats().Resyncs, p2.Stats().Resyncs)
	}
}

// A publisher started after another stopped numbers on from the stream.
func TestRestartedPublisherReusesNoNumber(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, st := connect(t, e.ClientURL(), testStream())
	p1, stop1 := runPublisher(t, c, st, PublisherOptions{})
	publishLines(t, p1, "one", 0, 100)
	poll.Eventually(t, 10*time.Second, func() bool { return p1.Stats().Lines == 100 }, "first publisher acknowledged")
	stop1()
	p2, _ := runPublisher(t, c, st, PublisherOptions{})
	publishLines(t, p2, "two", 0, 50)
	poll.Eventually(t, 10*time.Second, func() bool { return p2.Stats().Lines == 50 }, "second publisher acknowledged")
	if s := p2.Stats(); s.LastSeq != 150 {
		t.Errorf("second publisher's last line is %d, want 150", s.LastSeq)
	}
	_, col := runConsumer(t, c, ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 150 }, "150 lines consumed")
	first, lines, bad := col.snapshot()
	if want := append(linesOf("one", 0, 100), linesOf("two", 0, 50)...); first != 1 || !equal(lines, want) || len(bad) > 0 {
		t.Errorf("consumed %d lines from %d, problems %q", len(lines), first, bad)
	}
}

// A batch published again after its acknowledgement was lost is found
// stored and not stored again, and the numbering goes on after it.
func TestRetriedBatchStoredOnce(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, st := connect(t, e.ClientURL(), testStream())
	p := NewPublisher(c.JS, st, PublisherOptions{Subject: "test.feed", Window: 4, BufferBytes: 1 << 20, BatchLines: 10, BatchBytes: 1 << 16}, testLog(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	publishLines(t, p, "x", 0, 3)
	b := p.take()
	if err := p.send(b); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.fut.Ok():
	case err := <-b.fut.Err():
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("no acknowledgement")
	}
	// The acknowledgement is lost: the publisher takes the batch as
	// failed, and publishes it again after reading the stream.
	p.inflight = nil
	p.failed(ctx, &batch{lines: b.lines, bytes: b.bytes, first: b.first, id: b.id}, true)
	publishLines(t, p, "y", 0, 2)
	go func() { p.loop(ctx, nil) }()
	poll.Eventually(t, 10*time.Second, func() bool { s := p.Stats(); return s.Lines == 5 && s.Buffered == 0 }, "the retried batch and the next acknowledged")
	cancel()
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("the stream holds %d messages, want 2: the retried batch stored once, then the next", info.State.Msgs)
	}
	m, err := st.GetMsg(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := Decode(m.Header, m.Data); err != nil || d.First != 4 || len(d.Lines) != 2 {
		t.Errorf("second message numbered %d with %d lines (%v), want 4 with 2", d.First, len(d.Lines), err)
	}
}

// While the server is down the feed is buffered up to BufferBytes, then
// held back; when the server is back, every line is stored once, in order.
func TestUnreachableHoldsFeedBack(t *testing.T) {
	addr, dir := freeAddr(t), t.TempDir()
	e := startServer(t, addr, dir)
	c, st := connect(t, e.ClientURL(), testStream())
	p, _ := runPublisher(t, c, st, PublisherOptions{BufferBytes: 2000, BatchLines: 10})
	publishLines(t, p, "before", 0, 10)
	poll.Eventually(t, 10*time.Second, func() bool { return p.Stats().Lines == 10 }, "lines acknowledged before the server stops")
	e.Shutdown()

	fed := make(chan int, 1000)
	go func() {
		for i := 0; i < 400; i++ {
			if err := p.Publish(context.Background(), [][]byte{[]byte(fmt.Sprintf("during %d", i))}); err != nil {
				return
			}
			fed <- i
		}
		close(fed)
	}()
	poll.Eventually(t, 10*time.Second, func() bool { return p.Stats().HeldBack > 0 }, "the feed held back")
	held := len(fed)
	if held >= 400 || p.Stats().Buffered > 2000 {
		t.Fatalf("%d lines taken, %d bytes buffered, while the server was down with 2000 bytes of buffer", held, p.Stats().Buffered)
	}

	startServer(t, addr, dir)
	poll.Eventually(t, 30*time.Second, func() bool { return p.Stats().Lines == 410 }, "every line acknowledged after the server is back")
	_, col := runConsumer(t, c, ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 410 }, "410 lines consumed")
	first, lines, bad := col.snapshot()
	if want := append(linesOf("before", 0, 10), linesOf("during", 0, 400)...); first != 1 || !equal(lines, want) || len(bad) > 0 {
		t.Errorf("consumed %d lines from %d, problems %q; want 410 once each in order", len(lines), first, bad)
	}
}

// An edge that needs lines the stream no longer keeps is told of a gap,
// counted, and goes on from what the stream has.
func TestConsumerReportsGap(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	s := testStream()
	s.MaxMsgs = 5
	c, st := connect(t, e.ClientURL(), s)
	p, _ := runPublisher(t, c, st, PublisherOptions{BatchLines: 1, Window: 1})
	publishLines(t, p, "l", 0, 20)
	poll.Eventually(t, 10*time.Second, func() bool { return p.Stats().Lines == 20 }, "20 lines acknowledged")

	cons, col := runConsumer(t, c, ConsumerOptions{StartSeq: 1, NextLine: 1})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 5 }, "the 5 lines kept consumed")
	first, lines, _ := col.snapshot()
	if first != 16 || !equal(lines, linesOf("l", 15, 5)) {
		t.Errorf("consumed %q from %d, want the last 5 from 16", lines, first)
	}
	if s := cons.Stats(); s.Gaps != 1 || s.GapLines != 15 || s.LastSeq != 20 {
		t.Errorf("consumer stats %+v, want one gap of 15 lines, last 20", s)
	}
}

// A consumer whose stream is deleted under it starts over by itself,
// trying again on its back-off, and still stops within its bound when
// told to (the test's cleanup). nats.go's ordered consumer, used before,
// retried inside Next for ever, deaf to being told to stop.
func TestConsumerStartsOverWhenStreamGone(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, st := connect(t, e.ClientURL(), testStream())
	p, _ := runPublisher(t, c, st, PublisherOptions{})
	publishLines(t, p, "l", 0, 10)
	cons, col := runConsumer(t, c, ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 10 }, "10 lines consumed")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.JS.DeleteStream(ctx, "TEST"); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 60*time.Second, func() bool { return cons.Stats().Restarts > 0 }, "the consumer started over with its stream gone")
}

// An edge whose consumer the server removes makes a new one that starts
// after the last message it handed on: nothing is missed or repeated, and
// only the new consumer is left on the stream.
func TestConsumerDeletedStartsOverWhereItWas(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, st := connect(t, e.ClientURL(), testStream())
	p, _ := runPublisher(t, c, st, PublisherOptions{BatchLines: 3})
	publishLines(t, p, "l", 0, 20)
	cons, col := runConsumer(t, c, ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 20 }, "20 lines consumed")
	names := func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var out []string
		l := st.ConsumerNames(ctx)
		for n := range l.Name() {
			out = append(out, n)
		}
		if l.Err() != nil {
			t.Fatal(l.Err())
		}
		return out
	}
	before := names()
	if len(before) != 1 {
		t.Fatalf("consumers on the stream %q, want the edge's one", before)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := st.DeleteConsumer(ctx, before[0]); err != nil {
		t.Fatal(err)
	}
	carriesOn(t, p, cons, col, 20, 20, "its deletion")
	if after := names(); len(after) != 1 || after[0] == before[0] {
		t.Errorf("consumers on the stream %q after the restart, want one other than %q", after, before[0])
	}
}

// A consumer told to stop removes its consumer from the stream before Run
// returns.
func TestConsumerStoppedLeavesNothing(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, st := connect(t, e.ClientURL(), testStream())
	p, _ := runPublisher(t, c, st, PublisherOptions{})
	publishLines(t, p, "l", 0, 5)
	col := &collector{}
	cons := NewConsumer(c.JS, ConsumerOptions{Stream: "TEST", Heartbeat: time.Second, StartFirst: true}, col.sink, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cons.Run(ctx) }()
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 5 }, "5 lines consumed")
	count := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	if n := count(); n != 1 {
		t.Fatalf("%d consumers on the stream while the edge runs, want 1", n)
	}
	cancel()
	poll.Closed(t, done, 10*time.Second, "the consumer told to stop still runs")
	if n := count(); n != 0 {
		t.Errorf("%d consumers on the stream after the edge stopped, want 0", n)
	}
}

// Messages published by another tool, without Chatty-Seq, continue the
// numbering, also for an edge that starts on one of them.
func TestUnnumberedMessagesContinueNumbering(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, st := connect(t, e.ClientURL(), testStream())
	p, _ := runPublisher(t, c, st, PublisherOptions{})
	publishLines(t, p, "p", 0, 3)
	poll.Eventually(t, 10*time.Second, func() bool { return p.Stats().Lines == 3 }, "3 lines acknowledged")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, payload := range []string{"cli 0", "cli 1\ncli 2\n"} {
		if _, err := c.JS.Publish(ctx, "test.feed", []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	publishLines(t, p, "q", 0, 2)
	poll.Eventually(t, 10*time.Second, func() bool { return p.Stats().Lines == 5 }, "5 lines acknowledged")
	if s := p.Stats(); s.LastSeq != 8 {
		t.Errorf("publisher's last line %d, want 8 (3 + 3 from the other tool + 2)", s.LastSeq)
	}
	// Stream message 3 is "cli 1\ncli 2": lines 5 and 6.
	_, col := runConsumer(t, c, ConsumerOptions{StartSeq: 3})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 4 }, "4 lines consumed")
	first, lines, bad := col.snapshot()
	if want := []string{"cli 1", "cli 2", "q 0", "q 1"}; first != 5 || !equal(lines, want) || len(bad) > 0 {
		t.Errorf("consumed %q from %d (%q), want %q from 5", lines, first, bad, want)
	}
}

// A credentials or NKey file that others may read is refused, naming the
// file and the fix, before anything connects.
func TestSecretFilesModeChecked(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		field string
		set   func(*config.NATS, string)
	}{
		{"nats.credentials_file", func(n *config.NATS, p string) { n.CredentialsFile = p }},
		{"nats.nkey_file", func(n *config.NATS, p string) { n.NKeyFile = p }},
		{"nats.tls.key_file", func(n *config.NATS, p string) { n.TLS.CertFile, n.TLS.KeyFile = p, p }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.field, ".", "_"))
			if err := os.WriteFile(path, []byte("secret\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := config.Default().NATS
			cfg.URLs = []string{"nats://127.0.0.1:1"}
			tc.set(&cfg, path)
			_, err := Connect(cfg, ConnOptions{}, testLog(t))
			if !errors.Is(err, ErrInsecureMode) || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), "chmod 600 "+path) {
				t.Errorf("Connect with %s mode 0644: %v; want ErrInsecureMode naming the field and chmod 600", tc.field, err)
			}
		})
	}
}

// Three embedded servers joined by nats.embedded's cluster settings
// form a cluster that keeps an R3 stream.
func TestEmbeddedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster election takes seconds")
	}
	var routes, clients []string
	for range 3 {
		routes = append(routes, freeAddr(t))
		clients = append(clients, freeAddr(t))
	}
	var servers []*Embedded
	for i := range 3 {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, "nats://"+r)
			}
		}
		e, err := NewEmbedded(config.NATSEmbedded{
			Enabled: true, Listen: clients[i], ServerName: fmt.Sprintf("s%d", i+1), StoreDir: t.TempDir(),
			ClusterName: "test", ClusterListen: routes[i], Routes: others,
		}, testLog(t).WithField("server", i+1))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Shutdown)
		servers = append(servers, e)
	}
	s := testStream()
	s.Replicas = 3
	c, st := connect(t, servers[0].ClientURL(), s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Name != "test" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream cluster %+v, want cluster test with 2 replicas besides the leader", info.Cluster)
	}
	p, _ := runPublisher(t, c, st, PublisherOptions{})
	publishLines(t, p, "r", 0, 10)
	poll.Eventually(t, 10*time.Second, func() bool { return p.Stats().Lines == 10 }, "10 lines acknowledged by the R3 stream")

	// A leader stepping down is an election, whose advisory wakes the
	// stream's waiters.
	el, err := WatchElections(c.NC, "TEST")
	if err != nil {
		t.Fatal(err)
	}
	defer el.Stop()
	next := el.Next()
	if _, err := c.NC.Request("$JS.API.STREAM.LEADER.STEPDOWN.TEST", nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-next:
	case <-time.After(30 * time.Second):
		t.Fatal("no election seen 30 s after the stream's leader stepped down")
	}
	if el.Seen() == 0 {
		t.Error("an election woke the waiter but Seen is 0")
	}
}

// Elections wakes every waiter that took Next before an election, and
// only the election of its own stream.
func TestElectionsWakeWaiters(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, _ := connect(t, e.ClientURL(), testStream())
	el, err := WatchElections(c.NC, "TEST")
	if err != nil {
		t.Fatal(err)
	}
	defer el.Stop()
	a, b := el.Next(), el.Next()
	// Another stream's election, then a round trip: it has been handled.
	if err := c.NC.Publish("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.OTHER", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a:
		t.Fatal("another stream's election woke the waiter")
	default:
	}
	if err := c.NC.Publish("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.TEST", nil); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("the stream's election did not wake a waiter")
		}
	}
	if n := el.Seen(); n != 1 {
		t.Errorf("Seen %d, want 1", n)
	}
	select {
	case <-el.Next():
		t.Error("Next after the election is already closed")
	default:
	}
	var none *Elections
	if none.Next() != nil || none.Seen() != 0 {
		t.Error("a nil Elections wakes or counts")
	}
}
