package poll

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// Until returns as soon as the condition holds, checking it again and again
// until then.
func TestUntilMet(t *testing.T) {
	var n atomic.Int32
	err := Until(context.Background(), 10*time.Second, func() bool { return n.Add(1) == 3 })
	if err != nil {
		t.Fatalf("Until: %v", err)
	}
	if got := n.Load(); got != 3 {
		t.Errorf("cond was checked %d times, want 3", got)
	}
}

func TestUntilTimeout(t *testing.T) {
	err := Until(context.Background(), 30*time.Millisecond, func() bool { return false })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Until on a condition never met: %v, want ErrTimeout", err)
	}
}

func TestUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Until(ctx, 10*time.Second, func() bool { return false })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Until with a cancelled context: %v, want context.Canceled", err)
	}
}

// fakeTB records Fatalf instead of ending the test.
type fakeTB struct{ failed string }

func (*fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestEventually(t *testing.T) {
	var ok fakeTB
	Eventually(&ok, 10*time.Second, func() bool { return true }, "true")
	if ok.failed != "" {
		t.Errorf("a condition that holds failed the test: %s", ok.failed)
	}
	var late fakeTB
	Eventually(&late, 30*time.Millisecond, func() bool { return false }, "the thing happened")
	if want := "after 30ms: the thing happened"; late.failed != want {
		t.Errorf("a condition never met failed the test with %q, want %q", late.failed, want)
	}
}

func TestClosed(t *testing.T) {
	ch := make(chan struct{})
	close(ch)
	var ok fakeTB
	Closed(&ok, ch, 10*time.Second, "closed")
	if ok.failed != "" {
		t.Errorf("a closed channel failed the test: %s", ok.failed)
	}
	var late fakeTB
	Closed(&late, make(chan struct{}), 30*time.Millisecond, "the goroutine stopped")
	if want := "after 30ms: the goroutine stopped"; late.failed != want {
		t.Errorf("a channel never closed failed the test with %q, want %q", late.failed, want)
	}
}
