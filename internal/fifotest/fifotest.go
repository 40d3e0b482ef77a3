// Package fifotest writes to FIFOs for tests of what reads them (the feed
// package's FIFO source, chattyd with feed.fifo).
package fifotest

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
)

// OpenWriter opens the FIFO at path for writing once a reader has it open,
// polling for up to timeout; if none does, the test fails saying msg. The
// file is closed when the test ends.
func OpenWriter(t testing.TB, path string, timeout time.Duration, msg string) *os.File {
	t.Helper()
	var w *os.File
	poll.Eventually(t, timeout, func() bool {
		// Non-blocking: fails (ENXIO) while no reader has the FIFO open,
		// and (ENOENT) while the path is missing.
		var err error
		w, err = os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		return err == nil
	}, msg)
	t.Cleanup(func() { w.Close() })
	return w
}

// Write opens the FIFO at path as OpenWriter does, writes s and closes
// it: one writer, as `printf %s s > path` is.
func Write(t testing.TB, path, s string, timeout time.Duration, msg string) {
	t.Helper()
	w := OpenWriter(t, path, timeout, msg)
	if _, err := w.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
