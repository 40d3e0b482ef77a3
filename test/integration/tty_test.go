package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/ptytest"
	"github.com/chatty-dev/chatty/test/harness"
	"golang.org/x/sys/unix"
)

// With a terminal as its feed (chattyd started by hand), lines typed are
// broadcast, SIGTERM stops it at once rather than after the next Enter,
// and the terminal is left as it was (not switched to non-blocking).
func TestTerminalFeed(t *testing.T) {
	t.Parallel()
	ctl, term := ptytest.Open(t)
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

// Feed lines are anybody's bytes: chattyctl watch on a terminal shows
// their control characters escaped rather than letting them retitle or
// clear the operator's terminal, a client still gets the bytes as they
// are, and chattyd's debug log holds no raw control byte, neither for the
// feed line nor for a client's line.
func TestWatchTerminalAndLogEscapeControls(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: "version: 1\npool:\n  size: 0\nlog:\n  level: debug\n"})
	ptyCtl, term := ptytest.Open(t)
	tio, err := unix.IoctlGetTermios(int(term.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST // the bytes as written, no "\r\n"
	if err := unix.IoctlSetTermios(int(term.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		shown bytes.Buffer
	)
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := ptyCtl.Read(b)
			mu.Lock()
			shown.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	screen := func() string {
		mu.Lock()
		defer mu.Unlock()
		return shown.String()
	}

	cmd := exec.Command(harness.BuildBinaries(t).Chattyctl, "--socket", d.ControlSocket(), "watch")
	cmd.Env = append(os.Environ(), "CHATTY_SOCKET=")
	cmd.Stdout = term
	stderr, err := os.Create(t.TempDir() + "/stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-waited:
		case <-time.After(short):
			cmd.Process.Kill()
			<-waited
		}
		if t.Failed() {
			b, _ := os.ReadFile(stderr.Name())
			t.Logf("chattyctl watch's stderr:\n%s", b)
		}
	})
	c := admitted(t, d, 1)[0]
	// watch sends nothing to say it is connected: feed until it shows.
	n := 0
	poll.Eventually(t, short, func() bool {
		n++
		d.Feed(fmt.Sprintf("sync %d", n))
		c.ReadLine(short)
		return strings.Contains(screen(), "sync ")
	}, "chattyctl watch shows no fed line")

	const hostile = "\x1b]0;owned\x07title \x1b[2Jcleared csi \u009b2J del \x7f tab\tkept"
	mark := d.LogLen()
	d.Feed(hostile)
	if got := c.ReadLine(short); got != hostile {
		t.Errorf("a client got %q; want the fed bytes unchanged, %q", got, hostile)
	}
	const want = `\x1b]0;owned\x07title \x1b[2Jcleared csi \u009b2J del \x7f tab` + "\tkept\n"
	poll.Eventually(t, short, func() bool { return strings.Contains(screen(), want) },
		"the terminal does not show the line escaped")
	if s := screen(); strings.ContainsAny(s, "\x1b\x07\x7f\u009b") {
		t.Errorf("chattyctl watch wrote a raw control character to the terminal: %q", s)
	}

	c.Send("client \x1b[31mred")
	d.WaitLogSince(t, mark, `<< client \x1b[31mred`, short)
	d.WaitLogSince(t, mark, `Received: `+want[:len(want)-len("\tkept\n")], short)
	if log := d.Log()[mark:]; strings.ContainsAny(log, "\x1b\x07\x7f\u009b") {
		t.Errorf("chattyd's log holds a raw control character:\n%q", log)
	}
}
