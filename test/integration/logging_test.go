package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// The log goes to log.file with mode 0640, and SIGUSR1 reopens it, so that
// logrotate can move the file away and chattyd writes a fresh one.
func TestLogFileReopenedOnSIGUSR1(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "chattyd.log")
	addr := harness.FreeAddr(t)
	d := harness.StartDaemon(t, harness.Options{
		Config: fmt.Sprintf("version: 1\npool:\n  size: 0\nlog:\n  file: %s\n", logPath),
		Listen: addr,
		NoWait: true,
	})
	readLog := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	poll.Eventually(t, short, func() bool { return strings.Contains(readLog(), "The TCP server is listening on "+addr) }, "listening line in the log file")
	st, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o640 {
		t.Errorf("log file mode %o, want 640", mode)
	}
	if d.Stderr() != "" {
		t.Errorf("chattyd wrote to stderr although log.file is set: %q", d.Stderr())
	}

	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGUSR1)
	poll.Eventually(t, short, func() bool { return strings.Contains(readLog(), "Log file reopened") }, "a fresh log file after SIGUSR1")

	// New lines go to the new file, none to the rotated one.
	c := harness.Dial(t, addr)
	c.KeepAlive(short)
	poll.Eventually(t, short, func() bool { return strings.Contains(readLog(), "New connection established") }, "connection logged in the new file")
	old, _ := os.ReadFile(rotated)
	if strings.Contains(string(old), "New connection established") || strings.Contains(string(old), "Log file reopened") {
		t.Errorf("the rotated file still receives lines:\n%s", old)
	}
	c.Close() // else shutdown waits drain_timeout for it to leave
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(short); code != 0 {
		t.Errorf("exit status %d", code)
	}
}
