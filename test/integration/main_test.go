// Package integration runs the real chattyd binary and checks what a user
// sees: bytes on TCP connections, the log, exit statuses, systemd
// notifications and the files it creates.
package integration

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// Generous deadlines: the tests run with -race on small machines.
const (
	short = 5 * time.Second  // anything that should take milliseconds
	long  = 20 * time.Second // bulk transfers of megabytes
)

// config returns a configuration file: version 1, no workers, and body
// (more top-level sections, but not pool).
func config(body string) string {
	return "version: 1\npool:\n  size: 0\n" + body
}

// numbered returns n feed lines "<prefix> 000001 ..." from first on, each
// padded with filler to width bytes when width is larger.
func numbered(prefix string, first, n, width int) []string {
	lines := make([]string, n)
	for i := range lines {
		l := fmt.Sprintf("%s %08d", prefix, first+i)
		if pad := width - len(l) - 1; pad > 0 {
			l += " " + strings.Repeat("x", pad)
		}
		lines[i] = l
	}
	return lines
}

// joinLines is what a client receives for lines: each followed by "\n".
func joinLines(lines []string) []byte {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// feedPacedTo feeds lines to d in batches of 1000, never more than 256 KiB
// ahead of what good has read, and checks that good receives every line in
// order: a client that keeps up must lose nothing, however slow this test
// process runs, while other clients may fall behind for good.
func feedPacedTo(t *testing.T, d *harness.Daemon, good *harness.Client, lines []string) {
	t.Helper()
	const window, batch = 256 << 10, 1000 // bytes, lines
	var (
		mu       sync.Mutex
		progress = sync.NewCond(&mu) // signalled when received or reading changes
		received int64               // bytes good has read; guarded by mu
		reading  = true              // this goroutine still reads; guarded by mu
	)
	fed := make(chan error, 1)
	go func() {
		w := d.FeedWriter()
		sent := int64(0)
		for i := 0; i < len(lines); i += batch {
			mu.Lock()
			for reading && sent-received > window {
				progress.Wait()
			}
			behind := sent-received > window
			mu.Unlock()
			if behind {
				fed <- errors.New("the good client stopped receiving")
				return
			}
			chunk := joinLines(lines[i:min(i+batch, len(lines))])
			if _, err := w.Write(chunk); err != nil {
				fed <- err
				return
			}
			sent += int64(len(chunk))
		}
		fed <- nil
	}()
	// However this goroutine ends (a failed read ends the test), the
	// feeder stops waiting for it.
	defer func() {
		mu.Lock()
		reading = false
		progress.Broadcast()
		mu.Unlock()
	}()
	for i, want := range lines {
		line := good.ReadLine(long)
		if line != want {
			t.Fatalf("good client, line %d: got %.80q, want %.80q", i+1, line, want)
		}
		mu.Lock()
		received += int64(len(line) + 1)
		progress.Broadcast()
		mu.Unlock()
	}
	if err := <-fed; err != nil {
		t.Fatalf("feed: %v", err)
	}
}

// diffLines describes the first difference between got and want, or "".
func diffLines(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("line %d: got %.80q, want %.80q", i+1, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("got %d lines, want %d", len(got), len(want))
	}
	return ""
}
