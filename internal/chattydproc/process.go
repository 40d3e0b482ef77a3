// Package chattydproc runs chattyd as a child process, in a process group
// of its own, and learns where it listens from its control API's
// /v1/status rather than from its log. The integration tests use it through
// test/harness, and the benchmark tools directly: it returns errors and
// takes no testing.TB.
//
// Every Process must be ended by its caller (Stop, KillGroup, or a signal
// and Wait): a goroutine waits for the process until then.
package chattydproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/pkg/control/client"
)

// Options say how Start runs chattyd.
type Options struct {
	// Bin is the chattyd binary. Required.
	Bin string
	// ControlSocket, if set, is passed with --control-socket, and Ready and
	// Addrs ask chattyd's control API there. Without it chattyd uses the
	// socket of its configuration, which Ready does not know.
	ControlSocket string
	// Args are more command-line arguments, after --control-socket.
	Args []string
	// Env are more environment variables, "NAME=value", added to Env().
	Env []string
	// Stdin, if set, is chattyd's standard input, a terminal say. Otherwise
	// Start makes a pipe, whose write end Feed returns.
	Stdin *os.File
	// Stdout and Stderr are as in exec.Cmd: nil discards the output.
	Stdout, Stderr io.Writer
	// WaitDelay is as in exec.Cmd: how long, after chattyd exits, the
	// copying of Stdout and Stderr may wait for workers that hold them.
	WaitDelay time.Duration
	// KillWithParent has the kernel kill chattyd (not its group) if the
	// thread that started it ends, so that a benchmark tool that dies
	// leaves no chattyd behind.
	KillWithParent bool
}

// Process is a chattyd started by Start.
type Process struct {
	cmd  *exec.Cmd
	feed *os.File       // write end of chattyd's stdin; nil with Options.Stdin
	ctl  *client.Client // nil without Options.ControlSocket

	done chan struct{} // closed once the process has been waited for
	err  error         // what Wait returned; valid once done is closed
	code int           // exit status, -1 for a signal; valid once done is closed
}

// ErrRunning is returned by Wait when chattyd still runs at its deadline.
var ErrRunning = errors.New("chattyd still running")

// Env returns this process's environment without the variables that would
// make chattyd talk to the caller's systemd or change its behaviour, with
// extra added.
func Env(extra ...string) []string {
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

// Start starts chattyd as opts say, in a new process group whose id is
// its process id. It does not wait for chattyd to listen: see Ready.
func Start(opts Options) (*Process, error) {
	if opts.Bin == "" {
		return nil, errors.New("start chattyd: no binary given (build it with: go build -o bin/chattyd ./daemon)")
	}
	var args []string
	if opts.ControlSocket != "" {
		args = append(args, "--control-socket", opts.ControlSocket)
	}
	args = append(args, opts.Args...)
	p := &Process{done: make(chan struct{})}
	p.cmd = exec.Command(opts.Bin, args...)
	p.cmd.Env = Env(opts.Env...)
	p.cmd.Stdout, p.cmd.Stderr = opts.Stdout, opts.Stderr
	p.cmd.WaitDelay = opts.WaitDelay
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if opts.KillWithParent {
		p.cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	var feedR *os.File
	if opts.Stdin != nil {
		p.cmd.Stdin = opts.Stdin
	} else {
		var err error
		if feedR, p.feed, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("start chattyd: feed pipe: %w", err)
		}
		p.cmd.Stdin = feedR
	}
	err := p.cmd.Start()
	if feedR != nil {
		feedR.Close() // chattyd has its own copy
	}
	if err != nil {
		if p.feed != nil {
			p.feed.Close()
		}
		return nil, fmt.Errorf("start %s: %w", opts.Bin, err)
	}
	if opts.ControlSocket != "" {
		p.ctl = client.New(opts.ControlSocket)
	}
	go func() { // ends with the process; see the package comment
		p.err = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	return p, nil
}

// PID returns chattyd's process id, which is also its process group's.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Feed returns the write end of chattyd's stdin, or nil when
// Options.Stdin was given. Closing it ends the feed.
func (p *Process) Feed() *os.File { return p.feed }

// Control returns a client of chattyd's control API, or nil without
// Options.ControlSocket.
func (p *Process) Control() *client.Client { return p.ctl }

// Done returns a channel closed once chattyd has exited and been waited for.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether chattyd has exited and been waited for.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode returns chattyd's exit status, -1 if a signal ended it. Call it
// once Done is closed.
func (p *Process) ExitCode() int { return p.code }

// Err returns what waiting for chattyd returned: nil for exit status 0.
// Call it once Done is closed.
func (p *Process) Err() error { return p.err }

// Signal sends sig to chattyd, not to its group.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// KillGroup sends SIGKILL to chattyd's whole process group, workers
// included. A group already gone is no error.
func (p *Process) KillGroup() {
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
}

// GroupAlive reports whether any process of chattyd's group is left,
// zombies included.
func (p *Process) GroupAlive() bool {
	return syscall.Kill(-p.PID(), 0) == nil
}

// Wait waits up to timeout for chattyd to exit and returns its exit status,
// -1 if a signal ended it, or ErrRunning if it still runs.
func (p *Process) Wait(timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.code, nil
	case <-t.C:
		return 0, fmt.Errorf("%w %s after it was expected to exit", ErrRunning, timeout)
	}
}

// Stop ends the whole process group: SIGTERM, then SIGKILL after grace.
// It returns once chattyd has been waited for, or 5 s after the SIGKILL.
func (p *Process) Stop(grace time.Duration) {
	_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
	if _, err := p.Wait(grace); err == nil && !p.GroupAlive() {
		return
	}
	// Whatever the leader did, leave no member of the group behind.
	p.KillGroup()
	_, _ = p.Wait(5 * time.Second)
}
