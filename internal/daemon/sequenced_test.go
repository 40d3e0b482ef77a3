package daemon

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/message"
)

// The feed and chattyctl send publish concurrently; every listener must
// number and order them alike, so that a sequenced client's numbers mean
// the same line on every listener. The text client's order is compared
// with the sequenced client's, line by line.
func TestInProcessListenersShareOneOrder(t *testing.T) {
	cfg := config.Default()
	cfg.Broadcast.Sequenced.Listen = "127.0.0.1:0"
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	text, textR := p.dial(t)
	defer text.Close()
	waitUntil(t, "the text client", func() bool { return p.d.listeners.text.Stats().Connected == 1 })

	const each = 300
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range each {
			p.src.lines <- fmt.Appendf(nil, "feed %d", i)
		}
	})
	wg.Go(func() {
		for i := range each {
			if _, err := p.ctl.Send(context.Background(), control.SendRequest{Type: message.Info.String(), Message: fmt.Sprintf("sent %d", i)}); err != nil {
				t.Errorf("send: %v", err)
				return
			}
		}
	})
	wg.Wait()

	var textLines []string
	text.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(textLines) < 2*each {
		l, err := textR.ReadString('\n')
		if err != nil {
			t.Fatalf("text client after %d lines: %v", len(textLines), err)
		}
		textLines = append(textLines, strings.TrimSuffix(l, "\n"))
	}

	st, err := p.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Stream.ID == "" || st.Stream.First != 1 || st.Stream.Last != 2*each || st.Stream.Lines != 2*each {
		t.Fatalf("status stream = %+v, want lines 1 to %d of a named stream", st.Stream, 2*each)
	}
	var seqAddr string
	for _, l := range st.Listeners {
		if l.Name == control.ListenerSequenced {
			seqAddr = l.Addr
		}
	}
	seq, err := net.Dial("tcp", seqAddr)
	if err != nil {
		t.Fatalf("dial the sequenced listener %q: %v", seqAddr, err)
	}
	defer seq.Close()
	fmt.Fprintf(seq, "START %s first\n", st.Stream.ID)
	r := bufio.NewReader(seq)
	seq.SetReadDeadline(time.Now().Add(10 * time.Second))
	if l, err := r.ReadString('\n'); err != nil || l != fmt.Sprintf("STREAM %s 1\n", st.Stream.ID) {
		t.Fatalf("answer %q, %v", l, err)
	}
	for i, want := range textLines {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("sequenced line %d: %v", i+1, err)
		}
		if got := strings.TrimSuffix(l, "\n"); got != fmt.Sprintf("%d %s", i+1, want) {
			t.Fatalf("sequenced line %d is %q; the text listener's was %q", i+1, got, want)
		}
	}
}
