package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// startWatchTo starts chattyctl watch with stdout as its standard output
// and returns a channel closed when it has exited, its exit status then,
// and its stderr.
func startWatchTo(t *testing.T, stdout *os.File, args ...string) (<-chan struct{}, func() *os.ProcessState, func() string) {
	t.Helper()
	cmd := exec.Command(harness.BuildBinaries(t).Chattyctl, args...)
	cmd.Env = append(os.Environ(), "CHATTY_SOCKET=")
	cmd.Stdout = stdout
	stderr, err := os.Create(t.TempDir() + "/stderr")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stderr.Close()
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	return exited, func() *os.ProcessState { <-exited; return cmd.ProcessState }, func() string {
		b, _ := os.ReadFile(stderr.Name())
		return string(b)
	}
}

// chattyctl watch | head -2: once head has gone, watch ends at its next
// write, quietly and with status 0, as cat does in a pipe.
func TestCtlWatchIntoClosedPipe(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	exited, state, stderr := startWatchTo(t, w, "--socket", d.ControlSocket(), "watch")
	w.Close()
	waitStatus(t, d.ControlSocket(), "the watcher connected", func(st wireStatus) bool { return st.Clients.Connected == 1 })
	d.Feed("one", "two", "three")
	br := bufio.NewReader(r)
	for range 2 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	poll.Eventually(t, short, func() bool {
		select {
		case <-exited:
			return true
		default:
			d.Feed("more") // watch finds the pipe closed at its next write
			return false
		}
	}, "chattyctl watch still runs with nobody reading its stdout")
	if st := state(); !st.Exited() || st.ExitCode() != 0 || stderr() != "" {
		t.Fatalf("chattyctl watch into a closed pipe: %v; stderr %q; want exit status 0 and nothing said", st, stderr())
	}
}

// A watch that chattyd ends (here, by stopping) exits 1 and says that the
// connection was closed: a script can tell it from an interrupted watch.
func TestCtlWatchEndedByDaemon(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	exited, state, stderr := startWatchTo(t, w, "--socket", d.ControlSocket(), "watch", "--addr", d.Addr())
	w.Close()
	waitStatus(t, d.ControlSocket(), "the watcher connected", func(st wireStatus) bool { return st.Clients.Connected == 1 })
	d.Feed("before the stop")
	if line, err := bufio.NewReader(r).ReadString('\n'); err != nil || line != "before the stop\n" {
		t.Fatalf("watch printed %q, %v", line, err)
	}
	d.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		st := state()
		want := fmt.Sprintf("chattyctl: %s closed the connection", d.Addr())
		if st.ExitCode() != 1 || !strings.HasPrefix(stderr(), want) {
			t.Fatalf("watch of a chattyd that stopped: %v; stderr %q; want exit status 1 and %q", st, stderr(), want)
		}
	case <-time.After(long):
		t.Fatal("chattyctl watch still runs after chattyd stopped")
	}
}
