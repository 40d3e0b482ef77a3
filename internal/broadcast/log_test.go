package broadcast

import (
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// wakeCall is one call of a log's wake.
type wakeCall struct {
	published int
	unlocked  bool // the log's mu was free
}

// recordWakes makes l report every call of its wake on the channel.
func recordWakes(l *log) <-chan wakeCall {
	calls := make(chan wakeCall, 8)
	l.wake = func(published int) {
		unlocked := l.mu.TryLock()
		if unlocked {
			l.mu.Unlock()
		}
		calls <- wakeCall{published, unlocked}
	}
	return calls
}

// nextWake returns the next call of the log's wake.
func nextWake(t *testing.T, calls <-chan wakeCall, what string) wakeCall {
	t.Helper()
	select {
	case c := <-calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the writers were never woken", what)
		return wakeCall{}
	}
}

// Whatever publishes, the log wakes its writers once its mu is unlocked,
// as they may run on the publisher's goroutine, and tells them how many
// bytes were published.
func TestLogWakesWritersUnlocked(t *testing.T) {
	check := func(t *testing.T, l *log, calls <-chan wakeCall, what string, publish func()) {
		t.Helper()
		from := l.endPos.Load()
		publish()
		c := nextWake(t, calls, what)
		if !c.unlocked {
			t.Errorf("%s woke the writers with the log's mu held", what)
		}
		if want := int(l.endPos.Load() - from); c.published != want {
			t.Errorf("%s: woken for %d bytes published, want %d", what, c.published, want)
		}
	}

	t.Run("text", func(t *testing.T) {
		l := newLog(textCodec{})
		calls := recordWakes(l)
		check(t, l, calls, "append", func() { l.append([][]byte{[]byte("line")}) })
		check(t, l, calls, "appendMessage", func() { l.appendMessage(&message.Message{Type: message.Info, Text: "hi"}) })
		check(t, l, calls, "close", l.close)
	})

	t.Run("signed", func(t *testing.T) {
		// The timer fires only when the test says: a publish of its own
		// between another's and the check would be counted in neither.
		cd, err := newSignedCodec(SignedOptions{Key: testSigningKey(t), Mode: signed.Chained,
			CheckpointEvery: 1000, CheckpointInterval: time.Hour}, logging.Discard())
		if err != nil {
			t.Fatal(err)
		}
		l := newLog(cd)
		calls := recordWakes(l)
		check(t, l, calls, "append", func() { l.append([][]byte{[]byte("line")}) })
		// The line is left uncovered: the checkpoint timer appends one.
		check(t, l, calls, "the checkpoint timer", func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if cd.timer == nil {
				t.Fatal("no checkpoint timer armed for an uncovered line")
			}
			cd.timer.Reset(0)
		})
		check(t, l, calls, "appendMessage", func() { l.appendMessage(&message.Message{Type: message.Info, Text: "hi"}) })
		check(t, l, calls, "close", l.close) // a final checkpoint covers the message
	})
}
