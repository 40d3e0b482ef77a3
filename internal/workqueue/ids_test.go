package workqueue

import (
	"context"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/poll"
)

// counter is an IDSource that other listeners would share.
type counter struct{ last atomic.Uint64 }

func (c *counter) Next() uint64 { return c.last.Add(1) }

// Workers take their ids from the source the daemon shares among its
// listeners, so that no worker has the id of another listener's client.
func TestWorkersNumberedFromTheSharedSource(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	q := New(ln, Options{}, logging.Discard())
	ids := new(counter)
	ids.last.Store(41) // another listener has had 41 clients
	q.SetClientIDs(ids)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if err := poll.Until(context.Background(), 10*time.Second, func() bool { return len(q.Workers()) == 2 }); err != nil {
		t.Fatal("two workers never admitted")
	}
	var got []uint64
	for _, w := range q.Workers() {
		got = append(got, w.ID)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{42, 43}) {
		t.Errorf("worker ids %v, want 42 and 43 from the shared source", got)
	}
}
