// Package controltest provides a fake controlserver.Backend that records its
// calls and a helper that serves it on a real Unix socket, for the tests
// of package control, its client and chattyctl.
package controltest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/controlserver"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/message"
)

// Backend is a fake daemon. Set its fields before serving it; it records
// every call, in order, as "status", "send Warning hello", "scale 3",
// "stop" and so on.
type Backend struct {
	StatusValue  control.Status
	ClientsValue []control.Client
	WorkersValue []control.Worker
	// IdentityValue is what Identity returns; nil answers controlserver.ErrNoIdentity.
	IdentityValue *control.Identity
	// SendErr and ScaleErr, when set, are returned by Send and Scale.
	SendErr, ScaleErr error
	// DeadLettersValue is what DeadLetters returns; nil answers
	// controlserver.ErrNoQueue, as a daemon that broadcasts does. Retry
	// takes the dead letter out of it, or answers controlserver.ErrNotFound.
	DeadLettersValue []control.DeadLetter
	// StopHook, when set, is called first thing by Stop.
	StopHook func()

	mu      sync.Mutex // guards the fields below
	calls   []string
	sent    []message.Message
	workers int
	seq     uint64
	onStop  func()
	stopped chan struct{}
}

// NewBackend returns a fake whose pool has workers slots desired.
func NewBackend(workers int) *Backend {
	return &Backend{workers: workers, stopped: make(chan struct{})}
}

func (b *Backend) record(call string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, call)
}

// Calls returns the calls so far.
func (b *Backend) Calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.calls...)
}

// Sent returns the messages sent so far.
func (b *Backend) Sent() []message.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]message.Message(nil), b.sent...)
}

// Stopped is closed when Stop is called.
func (b *Backend) Stopped() <-chan struct{} { return b.stopped }

// Status implements controlserver.Backend.
func (b *Backend) Status() control.Status {
	b.record("status")
	st := b.StatusValue
	b.mu.Lock()
	st.Pool.Desired = b.workers
	b.mu.Unlock()
	return st
}

// Clients implements controlserver.Backend.
func (b *Backend) Clients() []control.Client {
	b.record("clients")
	return b.ClientsValue
}

// Workers implements controlserver.Backend.
func (b *Backend) Workers() []control.Worker {
	b.record("workers")
	return b.WorkersValue
}

// Identity implements controlserver.Backend.
func (b *Backend) Identity() (control.Identity, error) {
	b.record("identity")
	if b.IdentityValue == nil {
		return control.Identity{}, controlserver.ErrNoIdentity
	}
	return *b.IdentityValue, nil
}

// Send implements controlserver.Backend.
func (b *Backend) Send(m message.Message) (uint64, error) {
	b.record(fmt.Sprintf("send %s %s", m.Type, m.Text))
	if b.SendErr != nil {
		return 0, b.SendErr
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	b.sent = append(b.sent, m)
	return b.seq, nil
}

// DeadLetters implements controlserver.Backend.
func (b *Backend) DeadLetters() ([]control.DeadLetter, error) {
	b.record("deadletters")
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.DeadLettersValue == nil {
		return nil, controlserver.ErrNoQueue
	}
	return append([]control.DeadLetter{}, b.DeadLettersValue...), nil
}

// Retry implements controlserver.Backend.
func (b *Backend) Retry(seq uint64) error {
	b.record(fmt.Sprintf("retry %d", seq))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.DeadLettersValue == nil {
		return controlserver.ErrNoQueue
	}
	for i, d := range b.DeadLettersValue {
		if d.Seq == seq {
			b.DeadLettersValue = append(b.DeadLettersValue[:i:i], b.DeadLettersValue[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%w: no dead letter %d", controlserver.ErrNotFound, seq)
}

// Scale implements controlserver.Backend.
func (b *Backend) Scale(n int) (int, error) {
	b.record(fmt.Sprintf("scale %d", n))
	if b.ScaleErr != nil {
		return 0, b.ScaleErr
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.workers
	b.workers = n
	return old, nil
}

// Stop implements controlserver.Backend: it closes Stopped and stops the server
// that Serve started, as a daemon would.
func (b *Backend) Stop() {
	if b.StopHook != nil {
		b.StopHook()
	}
	b.record("stop")
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.stopped:
	default:
		close(b.stopped)
	}
	if b.onStop != nil {
		b.onStop()
	}
}

// SocketDir returns a new directory for a socket, removed at the end of
// the test. Its path is short, unlike t.TempDir's, because a socket's
// path must fit in 108 bytes.
func SocketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Serve runs a control server for b at a new socket (opts.Path, when
// empty, becomes one in SocketDir) until the test ends or b.Stop is
// called. It returns the server, whose Addr is the socket's path.
func Serve(t testing.TB, b *Backend, opts controlserver.Options) *controlserver.Server {
	t.Helper()
	if opts.Path == "" && opts.Listener == nil {
		opts.Path = filepath.Join(SocketDir(t), "c.sock")
	}
	srv, err := controlserver.New(opts, b, logging.Discard())
	if err != nil {
		t.Fatalf("controlserver.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.mu.Lock()
	b.onStop = cancel
	b.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("control server Run = %v; want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("control server did not stop within 10s")
		}
	})
	return srv
}
