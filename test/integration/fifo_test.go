package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/chatty-dev/chatty/internal/fifotest"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/test/harness"
)

// startFIFODaemon starts chattyd reading the FIFO at path and returns it
// with a client, once chattyd has the FIFO open.
func startFIFODaemon(t *testing.T, path string) (*harness.Daemon, *harness.Client) {
	t.Helper()
	d := harness.StartDaemon(t, harness.Options{Config: config(`
feed:
  source: fifo
  path: ` + path + `
  on_eof: stop
`)})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short)
	fifoWrite(t, path, "")
	return d, c
}

// fifoOpen opens path for writing once chattyd has it open for reading.
func fifoOpen(t *testing.T, path string) *os.File {
	t.Helper()
	return fifotest.OpenWriter(t, path, short, "chattyd never opened its FIFO "+path)
}

// fifoWrite writes s to the FIFO at path as one writer: open, write, close.
func fifoWrite(t *testing.T, path, s string) {
	t.Helper()
	fifotest.Write(t, path, s, short, "chattyd never opened its FIFO "+path)
}

// A writer that closes the FIFO without a final newline (`printf %s x >
// fifo`) has its last line broadcast as a line when it closes; the next
// writer's first line is a line of its own.
func TestFIFOWriterEndsItsLine(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "feed.fifo")
	d, c := startFIFODaemon(t, fifo)
	fifoWrite(t, fifo, "partial-without-newline")
	if line := c.ReadLine(short); line != "partial-without-newline" {
		t.Fatalf("got %q, want the unfinished line when its writer closed", line)
	}
	fifoWrite(t, fifo, "next\n")
	if line := c.ReadLine(short); line != "next" {
		t.Fatalf("got %q, want %q", line, "next")
	}
	// A writer's end is not the end of the feed (on_eof: stop).
	if d.Exited() || strings.Contains(d.Log(), "End of feed") {
		t.Fatal("chattyd took a writer's end for the end of its feed")
	}
}

// The FIFO removed while chattyd runs: chattyd says it waits for the path
// (log and chattyctl status) and reads the FIFO made there again; a new
// FIFO moved over the path while a writer holds the old one open: chattyd
// switches to it. A FIFO chattyd created itself is created again.
func TestFIFOPathRemovedOrReplaced(t *testing.T) {
	t.Parallel()
	t.Run("removed, made again", func(t *testing.T) {
		t.Parallel()
		fifo := filepath.Join(t.TempDir(), "feed.fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		d, c := startFIFODaemon(t, fifo)
		fifoWrite(t, fifo, "before\n")
		if line := c.ReadLine(short); line != "before" {
			t.Fatalf("got %q", line)
		}
		if err := os.Remove(fifo); err != nil {
			t.Fatal(err)
		}
		want := "waiting (waiting for the FIFO path " + fifo + " to exist again)"
		poll.Eventually(t, short, func() bool {
			return strings.Contains(ctlOK(t, d.ControlSocket(), "status"), want)
		}, "chattyctl status never said "+want)
		d.WaitLog(t, "The feed FIFO path does not exist; waiting for it to exist again", short)
		if _, err := os.Lstat(fifo); err == nil {
			t.Fatal("chattyd made again a FIFO it had not made")
		}
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		fifoWrite(t, fifo, "after\n")
		if line := c.ReadLine(short); line != "after" {
			t.Fatalf("got %q", line)
		}
		d.WaitLog(t, "The feed FIFO is back; reading it", short)
		if st := status(t, d); st.Feed.State != control.FeedReading || st.Feed.Detail != "" {
			t.Errorf("feed state %q (%s), want %q", st.Feed.State, st.Feed.Detail, control.FeedReading)
		}
	})
	t.Run("replaced while open", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		fifo := filepath.Join(dir, "feed.fifo")
		d, c := startFIFODaemon(t, fifo)
		old := fifoOpen(t, fifo)
		if _, err := old.WriteString("old\n"); err != nil {
			t.Fatal(err)
		}
		if line := c.ReadLine(short); line != "old" {
			t.Fatalf("got %q", line)
		}
		tmp := filepath.Join(dir, "feed.fifo.new")
		if err := syscall.Mkfifo(tmp, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, fifo); err != nil {
			t.Fatal(err)
		}
		fifoWrite(t, fifo, "new\n")
		if line := c.ReadLine(short); line != "new" {
			t.Fatalf("got %q", line)
		}
		d.WaitLog(t, "The feed FIFO path now names another FIFO; reading that one", short)
		if st := status(t, d); st.Feed.State != control.FeedReading {
			t.Errorf("feed state %q (%s), want %q", st.Feed.State, st.Feed.Detail, control.FeedReading)
		}
	})
	t.Run("made by chattyd, removed", func(t *testing.T) {
		t.Parallel()
		fifo := filepath.Join(t.TempDir(), "feed.fifo")
		d, c := startFIFODaemon(t, fifo)
		if err := os.Remove(fifo); err != nil {
			t.Fatal(err)
		}
		fifoWrite(t, fifo, "after\n")
		if line := c.ReadLine(short); line != "after" {
			t.Fatalf("got %q", line)
		}
		d.WaitLog(t, "The feed FIFO was removed; created it again", short)
		if st, err := os.Lstat(fifo); err != nil || st.Mode().Type() != os.ModeNamedPipe || st.Mode().Perm() != 0o620 {
			t.Errorf("FIFO made again: %v %v, want prw--w----", st.Mode(), err)
		}
	})
}
