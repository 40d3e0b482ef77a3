package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/message"
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
	if _, err := p.ctl.Send(context.Background(), control.SendRequest{Type: message.Warning.String(), Message: "hello"}); err != nil {
		t.Fatal(err)
	}
	text.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range 51 {
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
	st, err := p.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := st.NATS
	if n == nil || n.State != "connected" || !n.Embedded || n.Stream != "CHATTY" || n.Publish.Lines != 51 || n.Publish.LastSeq != 51 || n.Consume.LastSeq != 51 {
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
