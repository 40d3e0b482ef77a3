package daemon

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/message"
)

// With delivery one the text listener is a work queue. A full queue
// holds the feed back without holding chattyctl send (refused, at once);
// the queue and the sequenced listener number the lines alike; and the
// feed stops before the pool, so that workers can drain what they hold.
func TestInProcessWorkQueue(t *testing.T) {
	cfg := config.Default()
	cfg.Broadcast.Delivery = config.DeliveryOne
	cfg.Broadcast.QueueLines = 5
	cfg.Broadcast.Sequenced.Listen = "127.0.0.1:0"
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	q := p.d.listeners.queue
	if q == nil || p.d.listeners.text != nil {
		t.Fatal("delivery one: the text listener is not served by the work queue")
	}
	for i := range 5 {
		p.src.lines <- fmt.Appendf(nil, "job %d", i+1)
	}
	sixth := make(chan struct{})
	go func() { p.src.lines <- []byte("job 6"); close(sixth) }()
	waitUntil(t, "the feed held back", func() bool { return q.Stats().FeedHeld })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := p.ctl.Send(ctx, control.SendRequest{Type: message.Info.String(), Message: "while full"})
	if err == nil || !strings.Contains(err.Error(), "work queue is full") {
		t.Fatalf("send with the queue full: %v; want it refused at once as full", err)
	}

	w, err := net.Dial("tcp", q.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := bufio.NewReader(w)
	w.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []string
	for len(got) < 6 {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("worker after %d lines: %v", len(got), err)
		}
		l = strings.TrimSuffix(l, "\n")
		got = append(got, l)
		fmt.Fprintf(w, "ACK_RECEIVED %d\n", len(l))
	}
	<-sixth
	for i, l := range got {
		if want := fmt.Sprintf("job %d", i+1); l != want {
			t.Fatalf("worker line %d: %q, want %q", i+1, l, want)
		}
	}
	waitUntil(t, "6 acks", func() bool { return q.Stats().Acked == 6 })

	st, err := p.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Queue == nil || st.Queue.Acked != 6 || st.Stream.Last != 6 {
		t.Fatalf("status queue %+v, stream %+v; want 6 acked of a stream ending at 6", st.Queue, st.Stream)
	}
	var seqAddr string
	for _, l := range st.Listeners {
		if l.Name == control.ListenerSequenced {
			seqAddr = l.Addr
		}
	}
	sc, err := net.Dial("tcp", seqAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	fmt.Fprintf(sc, "START %s first\n", st.Stream.ID)
	sr := bufio.NewReader(sc)
	sc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if l, err := sr.ReadString('\n'); err != nil || !strings.HasPrefix(l, "STREAM ") {
		t.Fatalf("sequenced answer %q, %v", l, err)
	}
	for i, want := range got {
		l, err := sr.ReadString('\n')
		if err != nil || l != fmt.Sprintf("%d %s\n", i+1, want) {
			t.Fatalf("sequenced line %d: %q, %v; the queue's line %d was %q", i+1, l, err, i+1, want)
		}
	}

	order := p.stopInOrder(t)
	if i, j := slices.Index(order, "feed"), slices.Index(order, "pool"); i < 0 || j < i {
		t.Errorf("parts stopped in the order %q, want the feed before the pool", order)
	}
	if !p.logged("Work queue drained: every line acknowledged") {
		t.Error("the stop does not say the work queue was drained")
	}
}
