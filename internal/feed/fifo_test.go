package feed

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/fifotest"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// waitFor bounds the tests' polls for a condition.
const waitFor = 5 * time.Second

// fifoRun is a FIFO source running in the background, collecting lines.
type fifoRun struct {
	src  *FIFO
	mu   sync.Mutex // guards got
	got  []string
	done chan error
}

func (r *fifoRun) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitLines waits until the source has delivered exactly want.
func (r *fifoRun) waitLines(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		got := r.lines()
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || time.Now().After(deadline) {
			t.Fatalf("lines = %q, want %q", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *fifoRun) waitState(t *testing.T, state, detail string) {
	t.Helper()
	poll.Eventually(t, waitFor, func() bool {
		s, d := r.src.State()
		return s == state && strings.Contains(d, detail)
	}, "state "+state+" "+detail)
}

// startFIFO runs a FIFO source on path, checking the path every 10 ms,
// and stops it at the end of the test, checking that it stops cleanly.
func startFIFO(t *testing.T, path string) *fifoRun {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	r := &fifoRun{src: NewFIFO(path, 100, logrus.NewEntry(log)), done: make(chan error, 1)}
	r.src.interval = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		r.done <- r.src.Run(ctx, HandlerFunc(func(batch [][]byte) {
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, l := range batch {
				r.got = append(r.got, string(l))
			}
		}))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want %v", err, context.Canceled)
			}
		case <-time.After(waitFor):
			t.Errorf("Run still running %s after cancel", waitFor)
		}
	})
	return r
}

// openWriter opens path for writing once a reader has it open.
func openWriter(t *testing.T, path string) *os.File {
	t.Helper()
	return fifotest.OpenWriter(t, path, waitFor, "no reader opened "+path)
}

// write opens path, writes s and closes it, as `printf %s s > path` does.
func write(t *testing.T, path, s string) {
	t.Helper()
	fifotest.Write(t, path, s, waitFor, "no reader opened "+path)
}

// A writer that closes without a final newline ends its line: the next
// writer's bytes start a line of their own.
func TestFIFOWriterEndsItsLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "feed")
	r := startFIFO(t, path)
	write(t, path, "partial-without-newline")
	r.waitLines(t, "partial-without-newline")
	write(t, path, "next\nand a second partial")
	r.waitLines(t, "partial-without-newline", "next", "and a second partial")
	write(t, path, "\r\n")
	r.waitLines(t, "partial-without-newline", "next", "and a second partial", "")
	poll.Eventually(t, waitFor, func() bool { return r.src.ended.Load() == 3 }, "not one stream ended per writer")
	// An over-long partial line is dropped at the writer's end, not
	// joined to the next one.
	write(t, path, strings.Repeat("x", 150))
	poll.Eventually(t, waitFor, func() bool { return r.src.Dropped() == 1 }, "over-long partial line not dropped")
	write(t, path, "short\n")
	r.waitLines(t, "partial-without-newline", "next", "and a second partial", "", "short")
}

// Between writers the FIFO has none; that is not an end of stream, and
// chattyd does not spin reading end of file: a writer that comes and goes
// without writing ends one stream, and only one.
func TestFIFONoWriterIsNoEOF(t *testing.T) {
	path := filepath.Join(t.TempDir(), "feed")
	r := startFIFO(t, path)
	w := openWriter(t, path)
	w.Close()
	poll.Eventually(t, waitFor, func() bool { return r.src.ended.Load() == 1 }, "the writer's end not seen")
	// Had chattyd read the writerless FIFO's end of file as an end of
	// stream, it would have counted one in a loop by now.
	write(t, path, "line\n")
	r.waitLines(t, "line")
	if n := r.src.ended.Load(); n > 2 {
		t.Errorf("%d streams ended for 2 writers", n)
	}
	if st, _ := r.src.State(); st != StateReading {
		t.Errorf("state %q, want %q", st, StateReading)
	}
}

// Two writers holding the FIFO open at once are one stream: the first's
// unfinished line is finished by the second (only the FIFO's end ends a
// line), and writes of up to PIPE_BUF bytes do not interleave.
func TestFIFOConcurrentWritersAreOneStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "feed")
	r := startFIFO(t, path)
	a := openWriter(t, path)
	b := openWriter(t, path)
	a.WriteString("from a, ")
	b.WriteString("finished by b\n")
	r.waitLines(t, "from a, finished by b")
	a.Close()
	b.WriteString("b's last")
	b.Close()
	r.waitLines(t, "from a, finished by b", "b's last")
}

// A FIFO chattyd did not create, removed: chattyd waits for the path
// (status says so), reads the new FIFO once it exists, and writers' lines
// arrive.
func TestFIFORemovedThenMadeAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "feed")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r := startFIFO(t, path)
	write(t, path, "before\n")
	r.waitLines(t, "before")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	r.waitState(t, StateWaiting, "waiting for the FIFO path "+path+" to exist again")
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("chattyd made the FIFO it did not create at start: %v", err)
	}
	// Something else in its place is not read, and said so.
	if err := os.WriteFile(path, []byte("not a fifo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.waitState(t, StateWaiting, "is not a FIFO")
	os.Remove(path)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	write(t, path, "after\n")
	r.waitLines(t, "before", "after")
	r.waitState(t, StateReading, "")
}

// A FIFO chattyd created at start, removed, is created again.
func TestFIFORemovedIsCreatedAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "feed")
	r := startFIFO(t, path)
	write(t, path, "before\n")
	r.waitLines(t, "before")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	write(t, path, "after\n") // waits for the FIFO to be there, open
	r.waitLines(t, "before", "after")
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != os.ModeNamedPipe || st.Mode().Perm() != 0o620 {
		t.Errorf("re-created FIFO has mode %s, want prw--w----", st.Mode())
	}
}

// A new FIFO moved over the path while a writer holds the old one open:
// chattyd reads what the old one holds, ends its unfinished line, and
// switches to the new one; the old writer's next write fails (EPIPE) as it
// is no longer read.
func TestFIFOReplacedWhileOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "feed")
	r := startFIFO(t, path)
	old := openWriter(t, path)
	if _, err := old.WriteString("old line\nold unfinished"); err != nil {
		t.Fatal(err)
	}
	r.waitLines(t, "old line")
	tmp := filepath.Join(dir, "feed.new")
	if err := unix.Mkfifo(tmp, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	write(t, path, "new line\n")
	r.waitLines(t, "old line", "old unfinished", "new line")
	r.waitState(t, StateReading, "")
	poll.Eventually(t, waitFor, func() bool {
		_, err := old.WriteString("lost\n")
		return errors.Is(err, syscall.EPIPE)
	}, "old FIFO still read")
}

// A writer that has the FIFO open when chattyd opens it is a stream of its
// own too.
func TestFIFOWriterBeforeReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "feed")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	// A reader of the test's own lets the writer open before chattyd.
	own, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := openWriter(t, path)
	r := startFIFO(t, path)
	poll.Eventually(t, waitFor, func() bool {
		// The test's two ends and chattyd's show in /proc/self/fd.
		n := 0
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && l == path {
				n++
			}
		}
		return n == 3
	}, "chattyd never opened the FIFO")
	own.Close()
	if _, err := w.WriteString("early, unfinished"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r.waitLines(t, "early, unfinished")
	write(t, path, "next\n")
	r.waitLines(t, "early, unfinished", "next")
}

// A FIFO passed by systemd is read as one stream from its descriptor: it
// has no path to follow and reports no state of its own.
func TestPassedFIFOHasNoPathToFollow(t *testing.T) {
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	var src Source = NewFile("fifo (systemd)", rd, 100, logrus.NewEntry(log))
	if _, ok := src.(Reporter); ok {
		t.Fatal("a passed FIFO reports a state of its own")
	}
	wr.WriteString("a\nlast")
	wr.Close()
	var got []string
	err = src.Run(context.Background(), HandlerFunc(func(b [][]byte) {
		for _, l := range b {
			got = append(got, string(l))
		}
	}))
	if err != nil || !slices.Equal(got, []string{"a", "last"}) {
		t.Fatalf("Run = %v, lines %q", err, got)
	}
}
