package natsfeed

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// electedSubject is the subject of the advisory nats-server publishes,
// in the stream's account, when the stream has elected a leader.
const electedSubject = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."

// Elections wakes who waits for a stream to answer again. While a
// clustered stream elects a leader, requests to it are not answered at
// all, and each waits for its whole timeout; a waiter that takes Next
// before its request can give up on it when the leader is there.
type Elections struct {
	sub  *nats.Subscription
	seen atomic.Uint64

	mu   sync.Mutex
	next chan struct{} // closed at the next election
}

// WatchElections subscribes to the leader-elected advisories of stream.
// A connection whose permissions refuse the subject gets no wake-ups
// (nats.go reports the refusal to the connection's error handler), and
// waiters fall back on their timeouts.
func WatchElections(nc *nats.Conn, stream string) (*Elections, error) {
	e := &Elections{next: make(chan struct{})}
	sub, err := nc.Subscribe(electedSubject+stream, func(*nats.Msg) { e.elected() })
	if err != nil {
		return nil, err
	}
	e.sub = sub
	return e, nil
}

func (e *Elections) elected() {
	e.seen.Add(1)
	e.mu.Lock()
	close(e.next)
	e.next = make(chan struct{})
	e.mu.Unlock()
}

// Next returns a channel closed at the first election after the call;
// on a nil Elections, one never closed.
func (e *Elections) Next() <-chan struct{} {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.next
}

// Seen returns how many elections have been seen.
func (e *Elections) Seen() uint64 {
	if e == nil {
		return 0
	}
	return e.seen.Load()
}

// Stop ends the subscription.
func (e *Elections) Stop() {
	if e != nil {
		e.sub.Unsubscribe()
	}
}

// cancelAt calls cancel when elected is closed, unless ctx is done
// first; cancel must end ctx, so the goroutine ends with it.
func cancelAt(ctx context.Context, cancel context.CancelFunc, elected <-chan struct{}) {
	if elected == nil {
		return
	}
	go func() {
		select {
		case <-elected:
			cancel()
		case <-ctx.Done():
		}
	}()
}
