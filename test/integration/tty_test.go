package integration

import (
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/chatty-dev/chatty/test/harness"
	"golang.org/x/sys/unix"
)

// openPTY returns a pseudo-terminal's controlling side and its terminal.
func openPTY(t *testing.T) (ctl, term *os.File) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ctl.Close() })
	fd := int(ctl.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	term, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term.Close() })
	return ctl, term
}

// With a terminal as its feed (chattyd started by hand), lines typed are
// broadcast, SIGTERM stops it at once rather than after the next Enter,
// and the terminal is left as it was (not switched to non-blocking).
func TestTerminalFeed(t *testing.T) {
	t.Parallel()
	ctl, term := openPTY(t)
	d := harness.StartDaemon(t, harness.Options{Stdin: term})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short)
	fmt.Fprint(ctl, "typed by hand\n")
	if got := c.ReadLine(short); got != "typed by hand" {
		t.Fatalf("client got %q", got)
	}
	c.Close()
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(short); code != 0 {
		t.Fatalf("exit status %d after SIGTERM with a terminal as stdin", code)
	}
	flags, err := unix.FcntlInt(term.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK != 0 {
		t.Error("chattyd left the terminal in non-blocking mode")
	}
}
