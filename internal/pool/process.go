package pool

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// errStopped is returned by start when the slot was stopped while waiting
// for the forking goroutine.
var errStopped = errors.New("slot stopped")

// maxOutputLine bounds a logged line of worker output; the rest of a
// longer line is dropped.
const maxOutputLine = 4096

// outputGrace is how long the output readers may take to see the end of
// the pipes once the worker's process group is dead. Only a process that
// left the group (setsid) and kept the pipes open makes them wait that long.
const outputGrace = time.Second

// spawnRequest asks the forking goroutine to start cmd, or with a nil cmd
// to start a guard if none runs, or with retireGuard to end the guard if
// the pool has no worker.
type spawnRequest struct {
	cmd         *exec.Cmd
	retireGuard bool
	// started, if set, is called with the new worker's pid as soon as
	// it has started, before the reply.
	started func(pid int)
	reply   chan<- error
}

// forker starts every worker and every guard, from one OS thread locked
// for the pool's life. The parent-death signal that kills workers when
// chattyd dies fires when the thread that forked them exits, not the
// process (golang/go#27505), so no worker may be forked from a thread that
// could exit earlier. The thread is never unlocked: when forker returns,
// after the pool has reaped every worker and guard, the runtime ends the
// thread. No worker starts without a guard (when the pool has one), and
// the guard learns its group before the worker is reported started.
func forker(reqs <-chan spawnRequest, g *guardian) {
	runtime.LockOSThread()
	for r := range reqs {
		if r.retireGuard {
			g.retireIdle()
			r.reply <- nil
			continue
		}
		err := g.ensure()
		if err == nil && r.cmd != nil {
			if err = r.cmd.Start(); err == nil {
				g.add(r.cmd.Process.Pid)
				if r.started != nil {
					r.started(r.cmd.Process.Pid)
				}
			}
		}
		r.reply <- err
	}
}

// process is one started worker.
type process struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	// exited is closed when the process has exited; it is reaped only by
	// reap, so until then its PID, which is also its process group ID,
	// cannot be reused.
	exited chan struct{}
	// outputs receives one value from each output reader when it ends.
	outputs chan struct{}
	pipes   [2]*os.File // read ends of stdout and stderr
	release func()      // ends the process's credentials; never nil
}

// CredentialsFDEnv names the environment variable that tells a worker
// which file descriptor holds its credentials (see Options.Credentials).
const CredentialsFDEnv = "CHATTY_CREDENTIALS_FD"

// credentials makes slot n's secret readable by cmd on file descriptor 3
// through a pipe that holds it whole. It returns the read end, for the
// caller to close once the process has started, and the release function.
func credentials(cmd *exec.Cmd, n int, o Options) (*os.File, func(), error) {
	if o.Credentials == nil {
		return nil, func() {}, nil
	}
	secret, release, err := o.Credentials(n)
	if err != nil {
		return nil, nil, fmt.Errorf("credentials for slot %d: %w", n, err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("credentials pipe: %w", err)
	}
	// A pipe holds 64 KiB: a secret of a few hundred bytes never blocks.
	_, err = w.Write(secret)
	clear(secret)
	w.Close()
	if err != nil {
		r.Close()
		release()
		return nil, nil, fmt.Errorf("credentials pipe: %w", err)
	}
	cmd.ExtraFiles = []*os.File{r}
	cmd.Env = append(cmd.Env, CredentialsFDEnv+"=3")
	return r, release, nil
}

// command builds the worker command for slot n from o.
func command(n int, o Options) (*exec.Cmd, error) {
	host, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("worker address %q: %w", o.Addr, err)
	}
	r := strings.NewReplacer("{host}", host, "{port}", port, "{addr}", o.Addr, "{slot}", strconv.Itoa(n))
	args := make([]string, len(o.Command))
	for i, a := range o.Command {
		args[i] = r.Replace(a)
	}
	cmd := exec.Command(args[0], args[1:]...)
	if cmd.Err != nil {
		return nil, fmt.Errorf("worker program %q: %w", args[0], cmd.Err)
	}
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.Env = append(cmd.Env,
		"CHATTY_SLOT="+strconv.Itoa(n),
		"CHATTY_ADDR="+o.Addr,
		"CHATTY_HOST="+host,
		"CHATTY_PORT="+port,
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	return cmd, nil
}

// start starts slot s's worker with o, through the forking goroutine, and
// starts its exit watcher and output readers, which reap waits for.
func (p *Pool) start(s *slot, o Options, log *logrus.Entry) (*process, error) {
	cmd, err := command(s.num, o)
	if err != nil {
		return nil, err
	}
	var pipes, writeEnds [2]*os.File
	for i := range pipes {
		if pipes[i], writeEnds[i], err = os.Pipe(); err != nil {
			closeAll(pipes[:i]...)
			closeAll(writeEnds[:i]...)
			return nil, fmt.Errorf("create output pipe: %w", err)
		}
	}
	cmd.Stdout, cmd.Stderr = writeEnds[0], writeEnds[1]
	cred, release, err := credentials(cmd, s.num, o)
	if err != nil {
		closeAll(pipes[:]...)
		closeAll(writeEnds[:]...)
		return nil, err
	}

	reply := make(chan error, 1)
	req := spawnRequest{cmd: cmd, reply: reply}
	if o.Replay {
		// Before the fork, as the worker may connect before its pid is
		// reported; and at once when it is.
		p.beginStart(s)
		req.started = func(pid int) { p.awaitWorker(s, pid) }
	}
	select {
	case p.spawns <- req:
		err = <-reply
	case <-s.stop:
		err = errStopped
	}
	closeAll(writeEnds[:]...) // the worker has its copies
	if cred != nil {
		cred.Close()
	}
	if err != nil {
		if o.Replay {
			p.startFailed(s)
		}
		release()
		closeAll(pipes[:]...)
		if errors.Is(err, errStopped) || errors.Is(err, errGuard) {
			return nil, err
		}
		return nil, fmt.Errorf("start %q: %w", cmd.Path, err)
	}

	w := &process{
		cmd:     cmd,
		pid:     cmd.Process.Pid,
		started: time.Now(),
		exited:  make(chan struct{}),
		outputs: make(chan struct{}, len(pipes)),
		pipes:   pipes,
		release: release,
	}
	go watchExit(w.pid, w.exited)
	for _, r := range pipes {
		go func() {
			defer func() { w.outputs <- struct{}{} }()
			logOutput(r, log)
		}()
	}
	return w, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// signalGroup sends sig to w's process group. It must not be called after
// reap. A group already gone is not an error worth reporting.
func (w *process) signalGroup(sig syscall.Signal) {
	_ = unix.Kill(-w.pid, sig)
}

// reap collects w's exit status, after exited is closed, waits for the
// output readers and says how w ended, as the original server did:
// "exited with code 2" or "killed by signal 9".
func (w *process) reap() string {
	_ = w.cmd.Wait() // the status is in ProcessState
	t := time.NewTimer(outputGrace)
	defer t.Stop()
	for range len(w.pipes) {
		select {
		case <-w.outputs:
		case <-t.C:
			closeAll(w.pipes[:]...) // ends the readers' reads
			<-w.outputs
		}
	}
	closeAll(w.pipes[:]...)
	w.release()
	return describe(w.cmd.ProcessState)
}

func describe(st *os.ProcessState) string {
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %d", int(ws.Signal()))
	}
	return fmt.Sprintf("exited with code %d", st.ExitCode())
}

// watchExit closes exited when the child pid has exited, without reaping
// it. It waits through the runtime's poller on a pidfd, so a thousand
// waiting workers do not hold a thousand OS threads; on kernels without
// pidfd it falls back to a blocking waitid.
func watchExit(pid int, exited chan<- struct{}) {
	defer close(exited)
	if fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK); err == nil {
		f := os.NewFile(uintptr(fd), "pidfd")
		defer f.Close()
		if rc, err := f.SyscallConn(); err == nil {
			err = rc.Read(func(fd uintptr) bool {
				return exitedNoReap(unix.P_PIDFD, int(fd), unix.WNOHANG)
			})
			if err == nil {
				return
			}
		}
	}
	exitedNoReap(unix.P_PID, pid, 0)
}

// exitedNoReap reports whether the child named by idType and id has
// exited, leaving it unreaped. Without WNOHANG in options it blocks until
// then. It reports true on errors too, so that callers do not wait forever.
func exitedNoReap(idType, id, options int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(idType, id, &info, unix.WEXITED|unix.WNOWAIT|options, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err != nil || info.Signo != 0
	}
}

// logOutput logs each line read from r until r ends.
// outputLevel reads the level a worker tagged its line with, as chattyd's
// own text format does ("[WARNING] ..."), so that the line is logged at
// that level without the tag repeated; other lines are info.
func outputLevel(line string) (logrus.Level, string) {
	tag, rest, ok := strings.Cut(line, "] ")
	if !ok {
		return logrus.InfoLevel, line
	}
	switch tag {
	case "[DEBUG":
		return logrus.DebugLevel, rest
	case "[INFO":
		return logrus.InfoLevel, rest
	case "[WARNING":
		return logrus.WarnLevel, rest
	case "[ERROR":
		return logrus.ErrorLevel, rest
	}
	return logrus.InfoLevel, line
}

func logOutput(r *os.File, log *logrus.Entry) {
	br := bufio.NewReaderSize(r, maxOutputLine)
	skipping := false // dropping the rest of a line too long to log
	for {
		line, err := br.ReadSlice('\n')
		full := errors.Is(err, bufio.ErrBufferFull)
		if !skipping {
			text := strings.TrimRight(string(line), "\r\n")
			if full {
				text += " [line truncated]"
			}
			if text != "" {
				level, rest := outputLevel(text)
				log.Log(level, rest)
			}
		}
		skipping = full
		if err != nil && !full {
			return
		}
	}
}
