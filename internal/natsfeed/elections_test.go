package natsfeed

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// silentAPI serves JetStream's API under prefix on nc: the first relay
// requests go on to the server's own API and their answers come back;
// every later one is left unanswered, as a stream electing a leader
// leaves them, and is signalled on the channel returned.
func silentAPI(t *testing.T, nc *nats.Conn, prefix string, relay int) <-chan string {
	t.Helper()
	asked := make(chan string, 16)
	n := 0
	sub, err := nc.Subscribe(prefix+".>", func(m *nats.Msg) {
		n++ // nats.go calls a subscription's handler from one goroutine
		if n > relay {
			asked <- m.Subject
			return
		}
		resp, err := nc.Request(jetstream.DefaultAPIPrefix+strings.TrimPrefix(m.Subject, prefix+"."), m.Data, 5*time.Second)
		if err != nil {
			t.Errorf("relaying %s: %v", m.Subject, err)
			return
		}
		m.Respond(resp.Data)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return asked
}

// waitAsked waits for the silent API to be asked.
func waitAsked(t *testing.T, asked <-chan string) string {
	t.Helper()
	select {
	case s := <-asked:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the API within 10 s")
		return ""
	}
}

// givenUp checks that what, which was waiting for an answer, returns on
// done the election's error.
func givenUp(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, errElected) {
			t.Errorf("%s returned %v, want it given up at the election (%v)", what, err, errElected)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still waits 10 s after the election", what)
	}
}

// A publisher reading the numbering from a stream that does not answer
// gives the request up when the stream elects a leader, rather than when
// it times out.
func TestPublisherAsksAgainAtElection(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, _ := connect(t, e.ClientURL(), testStream())
	asked := silentAPI(t, c.NC, "SILENT.API", 1)
	js, err := jetstream.NewWithAPIPrefix(c.NC, "SILENT.API")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "TEST") // relayed
	if err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(js, st, PublisherOptions{Subject: "test.feed", Window: 1, BufferBytes: 1 << 20, BatchLines: 1, BatchBytes: 1 << 10}, testLog(t))
	el := &Elections{next: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- p.sync(context.Background(), el.Next()) }()
	if s := waitAsked(t, asked); !strings.Contains(s, "STREAM.INFO") {
		t.Errorf("the publisher asked %s, want the stream's info", s)
	}
	el.elected()
	givenUp(t, done, "sync")
}

// A consumer being made on a stream that does not answer gives the
// request up when the stream elects a leader, and asks to delete the
// consumer it named, which the server may have made all the same.
func TestConsumerAsksAgainAtElection(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, _ := connect(t, e.ClientURL(), testStream())
	asked := silentAPI(t, c.NC, "SILENT.API", 1) // the stream's info, then nothing
	js, err := jetstream.NewWithAPIPrefix(c.NC, "SILENT.API")
	if err != nil {
		t.Fatal(err)
	}
	cons := NewConsumer(js, ConsumerOptions{Stream: "TEST", Heartbeat: time.Second}, (&collector{}).sink, testLog(t))
	el := &Elections{next: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- cons.consume(context.Background(), el.Next()) }()
	create := waitAsked(t, asked)
	const createPrefix = "SILENT.API.CONSUMER.CREATE.TEST."
	if !strings.HasPrefix(create, createPrefix) {
		t.Fatalf("the consumer asked %s, want %s<name>", create, createPrefix)
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(create, createPrefix), ".")
	el.elected()
	givenUp(t, done, "consume")
	if del := waitAsked(t, asked); del != "SILENT.API.CONSUMER.DELETE.TEST."+name {
		t.Errorf("after the given-up creation the consumer asked %s, want the deletion of %s", del, name)
	}
	cons.deleting.Wait()
}

// A consumer whose connection is cut and comes back starts over after the
// last message it handed on, though its consumer outlived the cut, as
// nats.go's ordered consumer does: a delivery the cut lost is sent again.
// Nothing is missed or repeated.
func TestConsumerStartsOverAfterReconnect(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, st := connect(t, e.ClientURL(), testStream())
	p, _ := runPublisher(t, c, st, PublisherOptions{})
	publishLines(t, p, "l", 0, 10)
	cons, col := runConsumer(t, c, ConsumerOptions{StartFirst: true})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 10 }, "10 lines consumed")
	id, err := c.NC.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Server().DisconnectClientByID(id); err != nil {
		t.Fatal(err)
	}
	carriesOn(t, p, cons, col, 10, 10, "the reconnect")
}

// A heartbeat longer than nats.go allows for its default pull (half of
// 30 s) still consumes: the pull is made long enough for it.
func TestConsumerLongHeartbeat(t *testing.T) {
	e := startServer(t, "127.0.0.1:0", t.TempDir())
	c, st := connect(t, e.ClientURL(), testStream())
	p, _ := runPublisher(t, c, st, PublisherOptions{})
	publishLines(t, p, "l", 0, 5)
	cons, col := runConsumer(t, c, ConsumerOptions{StartFirst: true, Heartbeat: 20 * time.Second})
	poll.Eventually(t, 10*time.Second, func() bool { return col.count() >= 5 }, "5 lines consumed with a 20 s heartbeat")
	if n := cons.Stats().Restarts; n != 0 {
		t.Errorf("%d restarts, want 0", n)
	}
}
