package daemon

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/feed"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// endedSource is a feed that ends at once, with err.
type endedSource struct{ err error }

func (endedSource) Name() string                                    { return "test" }
func (endedSource) Dropped() uint64                                 { return 0 }
func (s endedSource) Run(ctx context.Context, h feed.Handler) error { return s.err }

// The log says what an operator can read: one worker is "1 worker" and
// "1 process", the identity's fingerprint is said once, a part that ends
// the daemon is named for what it is, not by an internal member name, and
// the end of the feed is not called "still serving" while stopping.
func TestLogWording(t *testing.T) {
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.InfoLevel)
	cfg := config.Default()
	cfg.Broadcast.Listen = "127.0.0.1:0"
	cfg.Control.Socket = filepath.Join(t.TempDir(), "control.sock")
	cfg.Pool.Size = 1
	cfg.Pool.Command = []string{"sleep", "60"}
	cfg.Feed.OnEOF = config.OnEOFStop
	cfg.Identity.Generate = true
	cfg.Identity.KeyFile = filepath.Join(t.TempDir(), "id.key")
	d, err := New(Options{Config: cfg, Logger: logger, Feed: endedSource{}, NoSignals: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop at the end of its feed (on_eof: stop)")
	}
	var msgs []string
	for _, e := range hook.AllEntries() {
		msgs = append(msgs, e.Message)
		if _, ok := e.Data["member"]; ok && e.Level <= logrus.InfoLevel {
			t.Errorf("an internal member name at %s: %q %v", e.Level, e.Message, e.Data)
		}
		if fp, ok := e.Data["fingerprint"].(string); ok && strings.Contains(e.Message, fp) {
			t.Errorf("the fingerprint is said twice: %q", e.Message)
		}
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"(1 process)", "Starting 1 worker", "Stopping: the feed ended (feed.on_eof: stop)", "Identity loaded"} {
		if !strings.Contains(all, want) {
			t.Errorf("the log lacks %q:\n%s", want, all)
		}
	}
	for _, bad := range []string{"1 processes", "1 workers", "still serving clients"} {
		if strings.Contains(all, bad) {
			t.Errorf("the log says %q:\n%s", bad, all)
		}
	}
}

// A part that fails is named for an operator too, at error level.
func TestLogWordingFailure(t *testing.T) {
	logger, hook := test.NewNullLogger()
	cfg := config.Default()
	cfg.Broadcast.Listen = "127.0.0.1:0"
	cfg.Control.Socket = filepath.Join(t.TempDir(), "control.sock")
	cfg.Pool.Size = 0
	cfg.Pool.Command = []string{"/bin/true"}
	d, err := New(Options{Config: cfg, Logger: logger, Feed: endedSource{err: errors.New("read: broken")}, NoSignals: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("Run = %v, want the feed's failure", err)
	}
	var found bool
	for _, e := range hook.AllEntries() {
		if _, ok := e.Data["member"]; ok && e.Level <= logrus.InfoLevel {
			t.Errorf("an internal member name at %s: %q %v", e.Level, e.Message, e.Data)
		}
		found = found || e.Level == logrus.ErrorLevel && e.Message == "Stopping: the feed failed"
	}
	if !found {
		t.Error("no error line \"Stopping: the feed failed\"")
	}
}
