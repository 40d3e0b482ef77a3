package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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

// errElected is the cause of a request given up because the stream
// elected a leader: it is sent again after electionSettle, to a stream
// that answers.
var errElected = errors.New("the stream elected a leader; asking again")

// electionSettle is how long a waiter woken by an election waits before
// it asks again: nats-server sends the advisory just before the new
// leader takes requests, and one that comes first is not answered.
const electionSettle = 100 * time.Millisecond

// request returns a context for one request to the stream: it ends after
// timeout, or, with cause errElected, when elected is closed. The
// goroutine that watches elected ends with the context, at the latest
// when the returned cancel is called.
func request(parent context.Context, timeout time.Duration, elected <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancelCause := context.WithCancelCause(parent)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	cancelWhen(ctx, cancelCause, elected, errElected)
	return ctx, func() { cancelTimeout(); cancelCause(nil) }
}

// cancelWhen cancels with cause when ch delivers a value or is closed,
// unless ctx, which cancel must end, is done first. A nil ch never does.
// Its goroutine ends with ctx.
func cancelWhen[T any](ctx context.Context, cancel context.CancelCauseFunc, ch <-chan T, cause error) {
	if ch == nil {
		return
	}
	go func() {
		select {
		case <-ch:
			cancel(cause)
		case <-ctx.Done():
		}
	}()
}

// requestErr returns err, the error of a request made with ctx from
// request, as errElected when the election is what ended it.
func requestErr(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errElected) {
		return fmt.Errorf("%w (%w)", errElected, err)
	}
	return err
}

// settle waits electionSettle, or until ctx is done.
func settle(ctx context.Context) {
	t := time.NewTimer(electionSettle)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
