package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/internal/poll"
)

// DefaultConfig is the configuration StartDaemon writes when the test gives
// none: the built-in defaults without workers, so that tests not about the
// pool run no processes besides chattyd.
const DefaultConfig = "version: 1\npool:\n  size: 0\n"

// StartTimeout bounds how long StartDaemon waits for chattyd to listen.
const StartTimeout = 10 * time.Second

// FeedTimeout bounds how long Feed waits for chattyd to read what it writes.
const FeedTimeout = 30 * time.Second

// Options say how StartDaemon runs chattyd.
type Options struct {
	// Config is the YAML written to the file passed with --config; empty
	// means DefaultConfig.
	Config string
	// NoConfig runs chattyd without --config, on its built-in configuration.
	NoConfig bool
	// Listen is passed with --listen; empty means "127.0.0.1:0", a port
	// chosen by the kernel and learnt from chattyd's /v1/status. Set "-"
	// to pass no --listen at all and keep the configuration's address.
	Listen string
	// Args are more command-line arguments, after the ones above.
	Args []string
	// Env are more environment variables, "NAME=value".
	Env []string
	// NotifySocket, if set, is passed as NOTIFY_SOCKET (see NotifySocket).
	NotifySocket string
	// ControlSocket is passed with --control-socket; empty means a fresh
	// path in a temporary directory, so that tests never share one. Set
	// "-" to pass none and keep the configuration's (or the default) path;
	// the harness then cannot ask chattyd where it listens, so set NoWait
	// and give Listen a port.
	ControlSocket string
	// Stdin, if set, is chattyd's standard input instead of the feed pipe
	// (Feed then fails the test); for a terminal, say.
	Stdin *os.File
	// NoWait returns as soon as the process is started, without waiting
	// for chattyd to answer on its control socket. Addr then waits for it.
	NoWait bool
}

// Daemon is a chattyd process started by StartDaemon. Its methods that take
// no testing.TB fail the test it was started for.
type Daemon struct {
	t             testing.TB
	proc          *chattydproc.Process
	configPath    string
	controlSocket string
	feed          *os.File // write end of chattyd's stdin; nil with Options.Stdin

	log    *Output // stdout and stderr, interleaved
	stdout *Output
	stderr *Output

	addrMu sync.Mutex // guards addr
	addr   string

	feedMu     sync.Mutex // guards feedClosed
	feedClosed bool
}

// StartDaemon builds chattyd if needed and starts it in its own process
// group (see package chattydproc), with a pipe as stdin (see Feed) and its
// output captured (see WaitLog). Unless opts.NoWait, it returns once
// chattyd answers on its control socket, which it does once it listens;
// Addr is then known. When the test ends, the process group is killed if
// still there, and the log is printed if the test failed.
func StartDaemon(tb testing.TB, opts Options) *Daemon {
	tb.Helper()
	bins := BuildBinaries(tb)
	d := &Daemon{
		t:      tb,
		log:    NewOutput(),
		stdout: NewOutput(),
		stderr: NewOutput(),
	}
	var args []string
	if !opts.NoConfig {
		d.configPath = filepath.Join(tb.TempDir(), "chattyd.yaml")
		cfg := opts.Config
		if cfg == "" {
			cfg = DefaultConfig
		}
		d.WriteConfig(cfg)
		args = append(args, "--config", d.configPath)
	}
	switch opts.Listen {
	case "":
		args = append(args, "--listen", "127.0.0.1:0")
	case "-":
	default:
		args = append(args, "--listen", opts.Listen)
		if _, port, err := net.SplitHostPort(opts.Listen); err == nil && port != "0" {
			d.addr = opts.Listen
		}
	}
	switch opts.ControlSocket {
	case "":
		d.controlSocket = filepath.Join(SocketDir(tb), "control.sock")
	case "-":
		if !opts.NoWait {
			tb.Fatal(`StartDaemon: with ControlSocket "-" the harness cannot ask chattyd where it listens; set NoWait and give Listen a port`)
		}
	default:
		d.controlSocket = opts.ControlSocket
	}
	args = append(args, opts.Args...)

	env := opts.Env
	if opts.NotifySocket != "" {
		env = append(env[:len(env):len(env)], "NOTIFY_SOCKET="+opts.NotifySocket)
	}

	proc, err := chattydproc.Start(chattydproc.Options{
		Bin:           bins.Chattyd,
		ControlSocket: d.controlSocket,
		Args:          args,
		Env:           env,
		Stdin:         opts.Stdin,
		// The stream's own output first: once WaitLog has seen a line
		// in the interleaved log, Stdout and Stderr hold it too.
		Stdout: teeWriter{d.stdout, d.log},
		Stderr: teeWriter{d.stderr, d.log},
		// A worker that outlives chattyd would hold the output pipes
		// open; do not let that block Wait.
		WaitDelay: 2 * time.Second,
	})
	if err != nil {
		tb.Fatal(err)
	}
	d.proc, d.feed = proc, proc.Feed()
	tb.Cleanup(d.cleanup)

	if !opts.NoWait {
		if addrs := d.Addrs(); d.addr == "" {
			d.addr = addrs.Text
		}
	}
	return d
}

// ControlSocket returns the control socket's path given to chattyd, or ""
// when the test chose none.
func (d *Daemon) ControlSocket() string { return d.controlSocket }

// SocketDir returns a new directory with a path short enough for Unix
// sockets (at most 108 bytes), removed when the test ends.
func SocketDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "cs")
	if err != nil {
		tb.Fatalf("socket dir: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// cleanup kills whatever is left of chattyd's process group and reports
// processes that outlived chattyd.
func (d *Daemon) cleanup() {
	d.CloseFeed()
	p := d.proc
	if p.Exited() {
		// chattyd has exited: nothing of its group may be left, once
		// orphans that are already dying have been reaped.
		gone := func() bool { return !p.GroupAlive() }
		if poll.Until(context.Background(), 2*time.Second, gone) != nil {
			d.t.Errorf("processes of chattyd's group %d are still running after chattyd exited", p.PID())
			p.KillGroup()
		}
	} else {
		p.KillGroup()
		<-p.Done()
	}
	if d.t.Failed() {
		const max = 64 << 10
		l := d.Log()
		if len(l) > max {
			l = "[...]" + l[len(l)-max:]
		}
		d.t.Logf("chattyd's log (pid %d, exit status %d):\n%s", p.PID(), p.ExitCode(), l)
	}
}

// ConfigPath returns the configuration file's path, empty with NoConfig.
func (d *Daemon) ConfigPath() string { return d.configPath }

// WriteConfig replaces the configuration file, for a reload with SIGHUP.
// The file is replaced atomically, so that chattyd never reads half of it.
func (d *Daemon) WriteConfig(yaml string) {
	d.t.Helper()
	if d.configPath == "" {
		d.t.Fatal("WriteConfig: chattyd runs without a configuration file (NoConfig)")
	}
	tmp := d.configPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o600); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, d.configPath); err != nil {
		d.t.Fatal(err)
	}
}

// PID returns chattyd's process id, which is also its process group id.
func (d *Daemon) PID() int { return d.proc.PID() }

// Addr returns the broadcast address of the text protocol, host:port. If
// it is not known yet, Addr waits for chattyd to answer on its control
// socket and takes it from /v1/status.
func (d *Daemon) Addr() string {
	d.t.Helper()
	d.addrMu.Lock()
	defer d.addrMu.Unlock()
	if d.addr == "" {
		d.addr = d.Addrs().Text
	}
	return d.addr
}

// Addrs returns the bound addresses of every listener chattyd runs, from
// its /v1/status, waiting for chattyd to answer there.
func (d *Daemon) Addrs() chattydproc.Addrs {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	addrs, err := d.proc.Addrs(ctx, StartTimeout)
	if err != nil {
		d.t.Fatal(err)
	}
	return addrs
}

// Feed writes lines to chattyd's stdin, each followed by "\n".
func (d *Daemon) Feed(lines ...string) {
	d.t.Helper()
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	d.FeedBytes(b.Bytes())
}

// FeedBytes writes raw bytes to chattyd's stdin.
func (d *Daemon) FeedBytes(p []byte) {
	d.t.Helper()
	if d.feed == nil {
		d.t.Fatal("FeedBytes: chattyd's stdin is Options.Stdin, not the feed pipe")
	}
	// Fail rather than hang when chattyd stops reading its feed.
	d.feed.SetWriteDeadline(time.Now().Add(FeedTimeout))
	defer d.feed.SetWriteDeadline(time.Time{})
	if _, err := d.feed.Write(p); err != nil {
		d.t.Fatalf("feed chattyd: %v", err)
	}
}

// FeedWriter returns chattyd's stdin, for feeding from another goroutine;
// nil with Options.Stdin.
func (d *Daemon) FeedWriter() io.Writer {
	if d.feed == nil {
		return nil
	}
	return d.feed
}

// CloseFeed closes chattyd's stdin: the feed ends. It may be called more
// than once.
func (d *Daemon) CloseFeed() {
	d.feedMu.Lock()
	defer d.feedMu.Unlock()
	if !d.feedClosed && d.feed != nil {
		d.feedClosed = true
		d.feed.Close()
	}
}

// Signal sends sig to chattyd (not to its group).
//
// chattyd installs its signal handlers only after it logs where it listens
// (see TestSignalRightAfterListening), so until that is fixed, send signals
// after a client's keep-alive was answered or after READY=1.
func (d *Daemon) Signal(sig os.Signal) {
	d.t.Helper()
	if err := d.proc.Signal(sig); err != nil {
		d.t.Fatalf("send %v to chattyd: %v", sig, err)
	}
}

// Wait waits for chattyd to exit and returns its exit status, -1 if a
// signal killed it. It fails the test if chattyd still runs after timeout.
func (d *Daemon) Wait(timeout time.Duration) int {
	d.t.Helper()
	code, err := d.proc.Wait(timeout)
	if err != nil {
		d.t.Fatal(err)
	}
	return code
}

// Exited reports whether chattyd has exited.
func (d *Daemon) Exited() bool { return d.proc.Exited() }

// Log returns everything chattyd wrote so far, stdout and stderr.
func (d *Daemon) Log() string { return d.log.String() }

// Stdout returns what chattyd wrote to stdout so far.
func (d *Daemon) Stdout() string { return d.stdout.String() }

// Stderr returns what chattyd wrote to stderr so far.
func (d *Daemon) Stderr() string { return d.stderr.String() }

// LogLen returns the length of the log so far, a mark for WaitLogSince.
func (d *Daemon) LogLen() int {
	b, _ := d.log.snapshot()
	return len(b)
}

// WaitLog waits until the log contains want and returns the log offset just
// after its first occurrence.
func (d *Daemon) WaitLog(tb testing.TB, want string, timeout time.Duration) int {
	tb.Helper()
	return d.WaitLogSince(tb, 0, want, timeout)
}

// WaitLogSince waits until the log from offset since contains want and
// returns the offset just after it.
func (d *Daemon) WaitLogSince(tb testing.TB, since int, want string, timeout time.Duration) int {
	tb.Helper()
	end, _ := d.waitLog(tb, since, fmt.Sprintf("%q", want), timeout, func(b []byte) (int, []string) {
		if i := bytes.Index(b, []byte(want)); i >= 0 {
			return i + len(want), nil
		}
		return -1, nil
	})
	return end
}

// CountLog returns how many times want occurs in the log so far.
func (d *Daemon) CountLog(want string) int {
	b, _ := d.log.snapshot()
	return bytes.Count(b, []byte(want))
}

// WaitLogCount waits until the log from offset since contains want n
// times and returns the offset just after the nth.
func (d *Daemon) WaitLogCount(tb testing.TB, since int, want string, n int, timeout time.Duration) int {
	tb.Helper()
	what := fmt.Sprintf("%q %d times", want, n)
	end, _ := d.waitLog(tb, since, what, timeout, func(b []byte) (int, []string) {
		off := 0
		for range n {
			i := bytes.Index(b[off:], []byte(want))
			if i < 0 {
				return -1, nil
			}
			off += i + len(want)
		}
		return off, nil
	})
	return end
}

// WaitLogRE waits until the log matches re and returns the submatches of
// the first match.
func (d *Daemon) WaitLogRE(tb testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	tb.Helper()
	_, m := d.waitLog(tb, 0, "/"+re.String()+"/", timeout, func(b []byte) (int, []string) {
		loc := re.FindSubmatchIndex(b)
		if loc == nil {
			return -1, nil
		}
		m := make([]string, len(loc)/2)
		for i := range m {
			if loc[2*i] >= 0 {
				m[i] = string(b[loc[2*i]:loc[2*i+1]])
			}
		}
		return loc[1], m
	})
	return m
}

func (d *Daemon) waitLog(tb testing.TB, since int, what string, timeout time.Duration, match func([]byte) (int, []string)) (int, []string) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b, changed := d.log.snapshot()
		if since > len(b) {
			since = len(b)
		}
		if end, m := match(b[since:]); end >= 0 {
			return since + end, m
		}
		select {
		case <-changed:
		case <-d.proc.Done():
			// The output is complete once the process is reaped.
			b, _ = d.log.snapshot()
			if end, m := match(b[since:]); end >= 0 {
				return since + end, m
			}
			tb.Fatalf("chattyd exited (status %d) without logging %s", d.proc.ExitCode(), what)
		case <-deadline.C:
			tb.Fatalf("chattyd did not log %s within %s", what, timeout)
		}
	}
}

// Result is the outcome of a chattyd run to completion.
type Result struct {
	Code   int // exit status, -1 if killed by a signal
	Stdout string
	Stderr string
}

// Run runs chattyd with args and no stdin to completion, as a command-line
// tool (check-config, print-config, a start that must fail), killing it
// after timeout.
func Run(tb testing.TB, timeout time.Duration, args ...string) Result {
	tb.Helper()
	bins := BuildBinaries(tb)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bins.Chattyd, args...)
	cmd.Env = chattydproc.Env()
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		tb.Fatalf("run chattyd %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		tb.Fatalf("chattyd %s still running after %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), timeout, &stdout, &stderr)
	}
	return Result{Code: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String()}
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago,
// for tests that need to know the port before chattyd starts (to start
// it again there); a test that only needs to learn it should bind port 0
// and read the status (Daemon.Addrs). See FreeLoopbackAddr.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := FreeLoopbackAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}
