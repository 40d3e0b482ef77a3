// Package poll waits for a condition by checking it every few milliseconds
// until a deadline, for tests and benchmark tools that observe another
// goroutine or process and have no event to wait for.
//
// It does not import testing, so that commands may use Until; Eventually
// takes anything with the two methods of testing.TB it needs.
package poll

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Every is how often Until and Eventually check their condition.
const Every = 10 * time.Millisecond

// ErrTimeout is returned by Until when the deadline passes first.
var ErrTimeout = errors.New("condition not met")

// Until checks cond every few milliseconds until it reports true, timeout
// passes, or ctx is done. It returns nil once cond reported true, an error
// wrapping ErrTimeout after timeout, or ctx's error. cond is checked at
// least once.
func Until(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(Every)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			if cond() {
				return nil
			}
			return fmt.Errorf("%w after %s", ErrTimeout, timeout)
		case <-tick.C:
		}
	}
	return nil
}

// TB is the part of testing.TB that Eventually uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Eventually checks cond every few milliseconds until it reports true, and
// fails the test with msg if it has not within timeout. Call it from the
// test's own goroutine, as it calls tb.Fatalf.
func Eventually(tb TB, timeout time.Duration, cond func() bool, msg string) {
	tb.Helper()
	if Until(context.Background(), timeout, cond) != nil {
		tb.Fatalf("after %s: %s", timeout, msg)
	}
}

// Closed waits until ch is closed (the end of a goroutine told to stop,
// say), and fails the test with msg if it is not within timeout.
func Closed(tb TB, ch <-chan struct{}, timeout time.Duration, msg string) {
	tb.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		tb.Fatalf("after %s: %s", timeout, msg)
	}
}
