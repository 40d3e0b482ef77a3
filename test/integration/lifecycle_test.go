package integration

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// Signals in these tests are sent only after a client got an answer to a
// keep-alive (or after READY=1): by then chattyd handles them. See
// TestSignalRightAfterListening for what happens before.

// writeFile writes content to name in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A taken address makes chattyd exit 1 with a message naming it.
func TestPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	cfg := writeFile(t, "chattyd.yaml", config(""))

	r := harness.Run(t, long, "--config", cfg, "--listen", addr)
	if r.Code != 1 {
		t.Errorf("exit status %d, want 1", r.Code)
	}
	for _, want := range []string{addr, "address already in use"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.Stderr)
		}
	}
}

// A restarted chattyd binds its port at once, although the previous one's
// connections are still in TIME_WAIT.
func TestQuickRestartOnSamePort(t *testing.T) {
	t.Parallel()
	addr := harness.FreeAddr(t)
	first := harness.StartDaemon(t, harness.Options{Listen: addr})
	c := harness.Dial(t, addr)
	c.KeepAlive(short)
	first.Feed("from the first")
	if line := c.ReadLine(short); line != "from the first" {
		t.Fatalf("got %q", line)
	}
	first.Signal(syscall.SIGTERM)
	c.ExpectClosed(short)
	c.Close()
	if code := first.Wait(short); code != 0 {
		t.Fatalf("first chattyd: exit status %d, want 0", code)
	}

	second := harness.StartDaemon(t, harness.Options{Listen: addr})
	c2 := harness.Dial(t, second.Addr())
	c2.KeepAlive(short)
}

// SIGTERM stops chattyd with status 0 after every client got every line
// fed before it.
func TestSIGTERMDeliversQueuedLines(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short)

	// 8 MB, so that much of it is still queued in chattyd, past the
	// kernel's buffers, when SIGTERM arrives.
	lines := numbered("queued", 1, 80000, 100)
	d.Feed(lines...)
	d.CloseFeed()
	d.WaitLog(t, "End of feed", short) // every line is in chattyd
	d.Signal(syscall.SIGTERM)

	if diff := diffLines(c.ReadLines(len(lines), long), lines); diff != "" {
		t.Fatal(diff)
	}
	c.ExpectClosed(short)
	c.Close()
	if code := d.Wait(short); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	d.WaitLog(t, "Stopped", short)
}

// A second stop signal while clients drain makes chattyd exit at once,
// instead of waiting drain_timeout for a client that does not read, when
// it comes a second or more after the first; one right after the first
// is the same stop sent twice.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		first, second syscall.Signal
	}{
		{"SIGTERM twice", syscall.SIGTERM, syscall.SIGTERM},
		{"SIGTERM then SIGINT", syscall.SIGTERM, syscall.SIGINT},
		{"SIGINT twice", syscall.SIGINT, syscall.SIGINT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := harness.StartDaemon(t, harness.Options{Config: config("broadcast:\n  drain_timeout: 30s\n")})
			c := harness.Dial(t, d.Addr())
			c.KeepAlive(short) // and never reads again
			d.Feed(numbered("undrained", 1, 40000, 100)...)
			d.CloseFeed()
			d.WaitLog(t, "End of feed", short)

			d.Signal(tc.first)
			d.WaitLog(t, "a second signal stops at once", short)
			if d.Exited() {
				t.Fatal("chattyd exited on the first signal although a client had not drained")
			}
			// The same stop sent twice, as GNU timeout does (to the
			// child and to its group), is not a second signal.
			d.Signal(tc.second)
			d.WaitLog(t, "Signal ignored: the stop began", short)
			if d.Exited() {
				t.Fatal("chattyd stopped at once on a signal that came right after the first")
			}
			// The stimulus: a second signal counts from a second after
			// the first on.
			time.Sleep(1100 * time.Millisecond)
			d.Signal(tc.second)
			if code := d.Wait(10 * time.Second); code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			if !strings.Contains(d.Log(), "Second signal: stopping at once") {
				t.Error("the log does not say that the second signal stopped chattyd")
			}
		})
	}
}

// SIGHUP applies a changed file (max_clients 1 to 3) without dropping
// connections, and rejects an invalid one, keeping the limit in force.
func TestSIGHUPReload(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: config("broadcast:\n  max_clients: 1\n")})
	c1 := harness.Dial(t, d.Addr())
	c1.KeepAlive(short)
	refused := func(max string) {
		t.Helper()
		c := harness.Dial(t, d.Addr())
		want := "ERROR too many clients (max_clients " + max + ")"
		if line := c.ReadLine(short); !strings.HasPrefix(line, want) {
			t.Fatalf("client over the limit: got %q, want %q...", line, want)
		}
		c.ExpectClosed(short)
	}
	refused("1")

	d.WriteConfig(config("broadcast:\n  max_clients: 3\n"))
	mark := d.LogLen()
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, mark, "Configuration reloaded", short)
	for range 2 {
		harness.Dial(t, d.Addr()).KeepAlive(short)
	}
	c1.KeepAlive(short) // the connection from before the reload is still served
	refused("3")

	d.WriteConfig(config("broadcast:\n  max_clients: 5\n  max_clientz: 9\n"))
	mark = d.LogLen()
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, mark, "Reload rejected", short)
	if rejection := d.Log()[mark:]; !strings.Contains(rejection, "max_clientz") {
		t.Errorf("the rejection does not name the unknown field max_clientz:\n%s", rejection)
	}
	refused("3")
	c1.KeepAlive(short)
	if d.Exited() {
		t.Fatal("chattyd exited")
	}
}

// chattyd tells systemd READY=1 once its port accepts connections, keeps
// STATUS= up to date, and sends RELOADING=1 then READY=1 around a reload
// and STOPPING=1 when it stops.
func TestSystemdNotify(t *testing.T) {
	t.Parallel()
	ns := harness.NotifySocket(t)
	addr := harness.FreeAddr(t)
	d := harness.StartDaemon(t, harness.Options{Listen: addr, NotifySocket: ns.Path, NoWait: true})

	_, i := ns.Wait(t, "READY=1", harness.StartTimeout)
	c := harness.Dial(t, addr) // at once: READY=1 means the port accepts
	c.KeepAlive(short)
	if status, _ := ns.Wait(t, "STATUS=", short); !strings.Contains(status, "clients") {
		t.Errorf("status %q does not mention clients", status)
	}

	d.Signal(syscall.SIGHUP)
	_, j := ns.WaitSince(t, i, "RELOADING=1", short)
	ns.WaitSince(t, j, "MONOTONIC_USEC=", short)
	_, k := ns.WaitSince(t, j, "READY=1", short)

	d.Signal(syscall.SIGTERM)
	ns.WaitSince(t, k, "STOPPING=1", short)
	c.ExpectClosed(short)
	c.Close()
	if code := d.Wait(short); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
}

// With WATCHDOG_USEC set chattyd pings the watchdog, unless the test
// switch CHATTYD_TEST_NO_WATCHDOG=1 is set.
func TestSystemdWatchdog(t *testing.T) {
	t.Parallel()
	t.Run("pings", func(t *testing.T) {
		t.Parallel()
		ns := harness.NotifySocket(t)
		harness.StartDaemon(t, harness.Options{NotifySocket: ns.Path, Env: []string{"WATCHDOG_USEC=200000"}})
		_, i := ns.Wait(t, "WATCHDOG=1", short)
		ns.WaitSince(t, i, "WATCHDOG=1", short)
	})
	t.Run("switched off", func(t *testing.T) {
		t.Parallel()
		ns := harness.NotifySocket(t)
		d := harness.StartDaemon(t, harness.Options{NotifySocket: ns.Path,
			Env: []string{"WATCHDOG_USEC=200000", "CHATTYD_TEST_NO_WATCHDOG=1"}})
		_, i := ns.Wait(t, "READY=1", short)
		// Two reload rounds take longer than the 100 ms between pings.
		for range 2 {
			d.Signal(syscall.SIGHUP)
			_, i = ns.WaitSince(t, i, "RELOADING=1", short)
			_, i = ns.WaitSince(t, i, "READY=1", short)
		}
		d.Signal(syscall.SIGTERM)
		if code := d.Wait(short); code != 0 {
			t.Errorf("exit status %d, want 0", code)
		}
		for _, m := range ns.Messages() {
			if m == "WATCHDOG=1" {
				t.Fatalf("WATCHDOG=1 sent with CHATTYD_TEST_NO_WATCHDOG=1: %q", ns.Messages())
			}
		}
	})
}

// feed.on_eof: stop ends chattyd (status 0) when the feed ends, after the
// clients got every line, a last one without newline included; keep (the
// default) serves on.
func TestFeedEOF(t *testing.T) {
	t.Parallel()
	t.Run("stop", func(t *testing.T) {
		t.Parallel()
		d := harness.StartDaemon(t, harness.Options{Config: config("feed:\n  on_eof: stop\n")})
		c := harness.Dial(t, d.Addr())
		c.KeepAlive(short)
		lines := []string{"one", "two", "three without newline"}
		d.Feed(lines[:2]...)
		d.FeedBytes([]byte(lines[2]))
		d.CloseFeed()
		if diff := diffLines(c.ReadLines(len(lines), short), lines); diff != "" {
			t.Fatal(diff)
		}
		c.ExpectClosed(short)
		c.Close()
		if code := d.Wait(short); code != 0 {
			t.Errorf("exit status %d, want 0", code)
		}
		d.WaitLog(t, "End of feed; stopping", short)
	})
	t.Run("keep", func(t *testing.T) {
		t.Parallel()
		d := harness.StartDaemon(t, harness.Options{})
		c := harness.Dial(t, d.Addr())
		c.KeepAlive(short)
		d.Feed("last")
		d.FeedBytes([]byte("really last, without newline"))
		d.CloseFeed()
		d.WaitLog(t, "End of feed; still serving clients", short)
		if diff := diffLines(c.ReadLines(2, short), []string{"last", "really last, without newline"}); diff != "" {
			t.Fatal(diff)
		}
		c.KeepAlive(short)
		harness.Dial(t, d.Addr()).KeepAlive(short)
		if d.Exited() {
			t.Fatal("chattyd exited at the end of the feed with on_eof: keep")
		}
	})
}

// A FIFO feed is created with mode 0620; writers may come and go: the end
// of a writer is not the end of the feed.
func TestFIFOFeed(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "feed.fifo")
	// on_eof: stop, so that an end of file would show as chattyd exiting.
	d := harness.StartDaemon(t, harness.Options{Config: config(`
feed:
  source: fifo
  path: ` + fifo + `
  on_eof: stop
`)})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short)

	var w *os.File
	poll.Eventually(t, short, func() bool {
		// Non-blocking: fails (ENXIO) until chattyd has the FIFO open.
		var err error
		w, err = os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		return err == nil
	}, "chattyd never opened its FIFO "+fifo)
	w.Close()
	st, err := os.Lstat(fifo)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != fs.ModeNamedPipe || st.Mode().Perm() != 0o620 {
		t.Errorf("FIFO mode %s, want prw--w----", st.Mode())
	}

	write := func(lines []string) {
		t.Helper()
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(joinLines(lines)); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	first, second := numbered("first", 1, 500, 0), numbered("second", 1, 500, 0)
	write(first)
	write(second)
	if diff := diffLines(c.ReadLines(1000, short), append(first, second...)); diff != "" {
		t.Fatal(diff)
	}
	// Had chattyd taken a writer's end for the end of the feed, it would
	// have stopped reading (and exited): a third writer proves it did not.
	write([]string{"third"})
	if line := c.ReadLine(short); line != "third" {
		t.Fatalf("got %q, want %q", line, "third")
	}
	if d.Exited() || strings.Contains(d.Log(), "End of feed") {
		t.Fatal("chattyd took a writer's end for the end of its feed")
	}
}

// A stop signal sent as soon as chattyd says where it listens must stop it
// cleanly, not kill it.
func TestSignalRightAfterListening(t *testing.T) {
	t.Parallel()
	for range 20 {
		// Not StartDaemon's wait, which is for the control socket,
		// served after the log line.
		d := harness.StartDaemon(t, harness.Options{NoWait: true})
		d.WaitLog(t, "The TCP server is listening on ", harness.StartTimeout)
		d.Signal(syscall.SIGTERM)
		if code := d.Wait(short); code != 0 {
			t.Fatalf("exit status %d, want 0", code)
		}
	}
}
