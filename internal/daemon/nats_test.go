package daemon

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/sirupsen/logrus/hooks/test"
)

// With an embedded NATS server the feed and chattyctl send go through
// the stream and come back numbered by it; status reports the shared feed,
// and a daemon started again on the same store continues the stream: the
// same identity, the numbering going on.
func TestInProcessSharedFeedThroughEmbeddedNATS(t *testing.T) {
	store := t.TempDir()
	cfg := config.Default()
	cfg.Broadcast.Sequenced.Listen = "127.0.0.1:0"
	cfg.NATS.Embedded = config.NATSEmbedded{Enabled: true, Listen: "127.0.0.1:0", StoreDir: store}
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	if p.d.shared == nil {
		t.Fatal("the daemon has no shared feed with nats.embedded.enabled")
	}
	text, textR := p.dial(t)
	waitUntil(t, "the text client", func() bool { return p.d.listeners.text.Stats().Connected == 1 })
	for i := range 50 {
		p.src.lines <- fmt.Appendf(nil, "feed %d", i)
	}
	text.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range 51 {
		if i == 50 {
			// Sent once the feed's lines are back: a line the feed has
			// taken but not yet published may come after a message
			// sent meanwhile, as two producers' lines may.
			if _, err := p.ctl.Send(context.Background(), control.SendRequest{Type: message.Warning.String(), Message: "hello"}); err != nil {
				t.Fatal(err)
			}
		}
		l, err := textR.ReadString('\n')
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		want := fmt.Sprintf("feed %d\n", i)
		if i == 50 {
			want = "[Warning] hello\n"
		}
		if !strings.HasSuffix(l, want) && l != want {
			t.Fatalf("line %d = %q, want %q", i, l, want)
		}
	}
	// The consumer counts a batch once the listeners have it.
	waitUntil(t, "the consumer's count", func() bool { return p.d.shared.consumer.Stats().LastSeq == 51 })
	// A line is back from the stream before its publish ack is counted.
	waitUntil(t, "the publisher's count", func() bool { return p.d.shared.publisher.Stats().Lines == 51 })
	st, err := p.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := st.NATS
	if n == nil || n.State != "connected" || !n.Embedded || n.Stream != "CHATTY" || n.Publish.Lines != 51 || n.Publish.LastSeq != 51 || n.Consume.LastSeq != 51 || n.Server != control.NATSServerInProcess {
		t.Fatalf("status nats = %+v, want connected to the embedded server, 51 lines published and consumed", n)
	}
	if st.Stream.Last != 51 {
		t.Errorf("status stream = %+v, want last line 51", st.Stream)
	}
	id := st.Stream.ID
	p.d.Stop()
	select {
	case err := <-p.runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		p.runErr <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after Stop")
	}

	cfg.NATS.Consume.Start = config.StartFirst
	q := startInProcess(t, cfg, nil, newHeldSource(false))
	st, err = q.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Stream.ID != id {
		t.Errorf("stream identity after a restart = %q, want %q", st.Stream.ID, id)
	}
	waitUntil(t, "the stream replayed", func() bool { return q.d.shared.consumer.Stats().LastSeq == 51 })
	q.src.lines <- []byte("after restart")
	waitUntil(t, "the new line numbered 52", func() bool { return q.d.shared.consumer.Stats().LastSeq == 52 })
}

// With delivery one and an embedded NATS server, the feed and chattyctl
// send go through the work-queue stream to the daemon's worker, and are
// acknowledged to JetStream once the worker acknowledged them; a line its
// worker holds unacknowledged when the daemon stops is not lost: the
// next daemon's worker gets it, as a redelivery.
func TestInProcessWorkQueueThroughEmbeddedNATS(t *testing.T) {
	store := t.TempDir()
	cfg := config.Default()
	cfg.Broadcast.Delivery = config.DeliveryOne
	cfg.Broadcast.DrainTimeout = 200 * time.Millisecond
	// The embedded server stops with the daemon; the one started again
	// may restore the line as delivered, and redeliver it after this.
	cfg.NATS.WorkQueue.AckWait = 2 * time.Second
	cfg.NATS.Embedded = config.NATSEmbedded{Enabled: true, Listen: "127.0.0.1:0", StoreDir: store}
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	if p.d.shared == nil || p.d.shared.work == nil {
		t.Fatal("the daemon pulls from no work-queue stream with delivery one and nats")
	}
	dialWorker := func(p *inProcess) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.d.listeners.textAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		return c, bufio.NewReader(c)
	}
	w, r := dialWorker(p)
	waitUntil(t, "the worker", func() bool { return p.d.listeners.queue.Stats().Connected == 1 })
	for i := range 20 {
		p.src.lines <- fmt.Appendf(nil, "job %d", i)
	}
	if _, err := p.ctl.Send(context.Background(), control.SendRequest{Type: message.Warning.String(), Message: "hello"}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 21 {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d lines: %v", len(got), err)
		}
		l = strings.TrimSuffix(l, "\n")
		got[l] = true
		fmt.Fprintf(w, "ACK_RECEIVED %d\n", len(l))
	}
	for i := range 20 {
		if !got[fmt.Sprintf("job %d", i)] {
			t.Errorf("the worker did not get job %d; got %v", i, got)
		}
	}
	if !slices.ContainsFunc(slices.Collect(maps.Keys(got)), func(l string) bool { return strings.HasSuffix(l, "[Warning] hello") }) {
		t.Errorf("the worker did not get the message sent; got %v", got)
	}
	waitUntil(t, "21 lines acknowledged to JetStream", func() bool { return p.d.shared.work.Stats().Acked == 21 })
	st, err := p.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := st.NATS; n == nil || n.WorkQueue == nil || n.Stream != "CHATTY_WORK" || n.WorkQueue.Messages != 21 || n.WorkQueue.Held != 0 {
		t.Fatalf("status nats = %+v, want the work-queue stream, 21 lines pulled, none held", n)
	}

	// One more line, held by the worker through the stop.
	p.src.lines <- []byte("held")
	if l, err := r.ReadString('\n'); l != "held\n" {
		t.Fatalf("read %q (%v), want the held line", l, err)
	}
	p.d.Stop()
	select {
	case err := <-p.runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		p.runErr <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after Stop")
	}
	q := startInProcess(t, cfg, nil, newHeldSource(false))
	w2, r2 := dialWorker(q)
	if l, err := r2.ReadString('\n'); l != "held\n" {
		t.Fatalf("the next daemon's worker read %q (%v), want the line given back", l, err)
	}
	fmt.Fprintf(w2, "ACK_RECEIVED 4\n")
	waitUntil(t, "the line given back acknowledged", func() bool {
		s := q.d.shared.work.Stats()
		return s.Acked == 1 && s.Redelivered == 1
	})
}

// A NATS server whose max_payload is below nats.publish.batch_bytes gets
// batches it takes; one too small for a feed line is refused at start,
// naming both, instead of a feed held back for ever.
func TestNATSServerMaxPayloadBoundsBatches(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), MaxPayload: 256 << 10, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.SetLoggerV2(nil, false, false, false)
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	cfg := config.Default()
	cfg.NATS.URLs = []string{s.ClientURL()}
	cfg.NATS.Publish.BatchBytes = 256 << 10
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	if got, want := p.d.shared.publisher.Options().BatchBytes, 256<<10-natsHeaderRoom; got != want {
		t.Errorf("batch bytes %d against a server of max_payload 256 KiB, want %d", got, want)
	}
	// Lines that would fill a batch of nats.publish.batch_bytes (and so
	// a message over max_payload) are stored, in smaller batches.
	line := strings.Repeat("x", 64<<10-1)
	for range 8 {
		p.src.lines <- []byte(line)
	}
	waitUntil(t, "8 long lines published", func() bool { return p.d.shared.publisher.Stats().Lines == 8 })

	cfg.Feed.MaxLineBytes = 512 << 10
	logger, _ := test.NewNullLogger()
	_, err = New(Options{Config: cfg, Logger: logger, Feed: newHeldSource(false), NoSignals: true})
	if err == nil || !strings.Contains(err.Error(), "max_payload") || !strings.Contains(err.Error(), "feed.max_line_bytes") {
		t.Errorf("New with lines larger than the server takes: %v, want an error naming max_payload and feed.max_line_bytes", err)
	}
}
