package demofeed

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitClientsReached(t *testing.T) {
	var calls atomic.Int32
	// Not running for two polls, then one more client each poll.
	connected := func(context.Context) (int, error) {
		n := int(calls.Add(1))
		if n <= 2 {
			return 0, errors.New("chattyd is not running")
		}
		return n - 2, nil
	}
	ok, got, err := WaitClients(context.Background(), connected, 3, 10*time.Second, time.Millisecond)
	if !ok || got != 3 || err != nil {
		t.Fatalf("WaitClients = %v, %d, %v; want true, 3, nil", ok, got, err)
	}
	if c := calls.Load(); c != 5 {
		t.Errorf("asked %d times, want 5 (2 errors, then 1, 2, 3 clients)", c)
	}
}

func TestWaitClientsTimeout(t *testing.T) {
	connected := func(context.Context) (int, error) { return 1, nil }
	start := time.Now()
	ok, got, err := WaitClients(context.Background(), connected, 4, 50*time.Millisecond, time.Millisecond)
	if ok || got != 1 || err != nil {
		t.Fatalf("WaitClients = %v, %d, %v; want false, 1, nil", ok, got, err)
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("gave up after %s, before the 50ms timeout", el)
	}

	failing := func(context.Context) (int, error) { return 0, errors.New("no such socket") }
	ok, _, err = WaitClients(context.Background(), failing, 1, 20*time.Millisecond, time.Millisecond)
	if ok || err == nil || err.Error() != "no such socket" {
		t.Fatalf("WaitClients on a daemon that never answers = %v, %v; want false and its error", ok, err)
	}
}
