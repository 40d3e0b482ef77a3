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
	// chosen by the kernel and learnt from the log. Set "-" to pass no
	// --listen at all and keep the configuration's address.
	Listen string
	// Args are more command-line arguments, after the ones above.
	Args []string
	// Env are more environment variables, "NAME=value".
	Env []string
	// NotifySocket, if set, is passed as NOTIFY_SOCKET (see NotifySocket).
	NotifySocket string
	// ControlSocket is passed with --control-socket; empty means a fresh
	// path in a temporary directory, so that tests never share one. Set
	// "-" to pass none and keep the configuration's (or the default) path.
	ControlSocket string
	// Stdin, if set, is chattyd's standard input instead of the feed pipe
	// (Feed then fails the test); for a terminal, say.
	Stdin *os.File
	// NoWait returns as soon as the process is started, without waiting
	// for the log line that says it listens. Addr then waits for it.
	NoWait bool
}

// Daemon is a chattyd process started by StartDaemon. Its methods that take
// no testing.TB fail the test it was started for.
type Daemon struct {
	t             testing.TB
	cmd           *exec.Cmd
	configPath    string
	controlSocket string
	feed          *os.File // write end of chattyd's stdin

	log    *output // stdout and stderr, interleaved
	stdout *output
	stderr *output

	done     chan struct{} // closed when the process has exited
	exitCode int           // valid once done is closed; -1 for a signal

	addrMu sync.Mutex // guards addr
	addr   string

	feedMu     sync.Mutex // guards feedClosed
	feedClosed bool
}

// cleanEnv is the test process's environment without the variables that
// would make chattyd talk to the real systemd or change its behaviour.
func cleanEnv(extra ...string) []string {
	drop := map[string]bool{
		"NOTIFY_SOCKET": true, "WATCHDOG_USEC": true, "WATCHDOG_PID": true,
		"LISTEN_FDS": true, "LISTEN_PID": true, "LISTEN_FDNAMES": true,
		"JOURNAL_STREAM": true, "CHATTYD_CONFIG": true, "CHATTYD_TEST_NO_WATCHDOG": true,
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !drop[name] {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// StartDaemon builds chattyd if needed and starts it in its own process
// group, with a pipe as stdin (see Feed) and its output captured (see
// WaitLog). Unless opts.NoWait, it returns once chattyd logs the address
// it listens on. When the test ends, the process group is killed if still
// there, and the log is printed if the test failed.
func StartDaemon(tb testing.TB, opts Options) *Daemon {
	tb.Helper()
	bins := BuildBinaries(tb)
	d := &Daemon{
		t:      tb,
		log:    newOutput(),
		stdout: newOutput(),
		stderr: newOutput(),
		done:   make(chan struct{}),
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
		args = append(args, "--control-socket", d.controlSocket)
	case "-":
	default:
		d.controlSocket = opts.ControlSocket
		args = append(args, "--control-socket", d.controlSocket)
	}
	args = append(args, opts.Args...)

	env := cleanEnv(opts.Env...)
	if opts.NotifySocket != "" {
		env = append(env, "NOTIFY_SOCKET="+opts.NotifySocket)
	}

	feedR, feedW, err := os.Pipe()
	if err != nil {
		tb.Fatalf("feed pipe: %v", err)
	}
	d.feed = feedW
	d.cmd = exec.Command(bins.Chattyd, args...)
	d.cmd.Env = env
	d.cmd.Stdin = feedR
	if opts.Stdin != nil {
		d.cmd.Stdin = opts.Stdin
	}
	// The stream's own output first: once WaitLog has seen a line in the
	// interleaved log, Stdout and Stderr hold it too.
	d.cmd.Stdout = teeWriter{d.stdout, d.log}
	d.cmd.Stderr = teeWriter{d.stderr, d.log}
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A worker that outlives chattyd would hold the output pipes open;
	// do not let that block Wait.
	d.cmd.WaitDelay = 2 * time.Second
	if err := d.cmd.Start(); err != nil {
		feedR.Close()
		feedW.Close()
		tb.Fatalf("start chattyd: %v", err)
	}
	feedR.Close()
	go func() {
		d.cmd.Wait()
		d.exitCode = d.cmd.ProcessState.ExitCode()
		close(d.done)
	}()
	tb.Cleanup(d.cleanup)

	if !opts.NoWait {
		m := d.WaitLogRE(tb, listeningRE, StartTimeout)
		d.addr = m[1]
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
	pgid := d.cmd.Process.Pid
	select {
	case <-d.done:
		// chattyd has exited: nothing of its group may be left, once
		// orphans that are already dying have been reaped.
		deadline := time.Now().Add(2 * time.Second)
		for syscall.Kill(-pgid, 0) == nil {
			if time.Now().After(deadline) {
				d.t.Errorf("processes of chattyd's group %d are still running after chattyd exited", pgid)
				syscall.Kill(-pgid, syscall.SIGKILL)
				break
			}
			time.Sleep(pollEvery)
		}
	default:
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-d.done
	}
	if d.t.Failed() {
		const max = 64 << 10
		l := d.Log()
		if len(l) > max {
			l = "[...]" + l[len(l)-max:]
		}
		d.t.Logf("chattyd's log (pid %d, exit status %d):\n%s", pgid, d.exitCode, l)
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
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

var listeningRE = regexp.MustCompile(`The TCP server is listening on ([0-9A-Za-z.:\[\]%-]+)`)

// Addr returns the broadcast address, host:port, waiting for chattyd to
// log it if it is not known yet.
func (d *Daemon) Addr() string {
	d.t.Helper()
	d.addrMu.Lock()
	defer d.addrMu.Unlock()
	if d.addr == "" {
		m := d.WaitLogRE(d.t, listeningRE, StartTimeout)
		d.addr = m[1]
	}
	return d.addr
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
	// Fail rather than hang when chattyd stops reading its feed.
	d.feed.SetWriteDeadline(time.Now().Add(FeedTimeout))
	defer d.feed.SetWriteDeadline(time.Time{})
	if _, err := d.feed.Write(p); err != nil {
		d.t.Fatalf("feed chattyd: %v", err)
	}
}

// FeedWriter returns chattyd's stdin, for feeding from another goroutine.
func (d *Daemon) FeedWriter() io.Writer { return d.feed }

// CloseFeed closes chattyd's stdin: the feed ends. It may be called more
// than once.
func (d *Daemon) CloseFeed() {
	d.feedMu.Lock()
	defer d.feedMu.Unlock()
	if !d.feedClosed {
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
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("send %v to chattyd: %v", sig, err)
	}
}

// Wait waits for chattyd to exit and returns its exit status, -1 if a
// signal killed it. It fails the test if chattyd still runs after timeout.
func (d *Daemon) Wait(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.done:
		return d.exitCode
	case <-time.After(timeout):
		d.t.Fatalf("chattyd still running %s after it was expected to exit", timeout)
		return 0
	}
}

// Exited reports whether chattyd has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

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
		case <-d.done:
			// The output is complete once the process is reaped.
			b, _ = d.log.snapshot()
			if end, m := match(b[since:]); end >= 0 {
				return since + end, m
			}
			tb.Fatalf("chattyd exited (status %d) without logging %s", d.exitCode, what)
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
	cmd.Env = cleanEnv()
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
// for tests that need to know the port before chattyd starts.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
