package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/internal/procstat"
)

// feedWriter is where the feeder writes: chattyd's stdin or a TCP
// connection to ncat. The write deadline unblocks it on shutdown.
type feedWriter interface {
	io.Writer
	SetWriteDeadline(time.Time) error
}

// target is the server under test, started and stopped by the tool.
type target struct {
	name   string
	pid    int                  // also its process group's
	proc   *chattydproc.Process // chattyd
	cmd    *exec.Cmd            // ncat or nats-server
	addr   string
	feed   feedWriter // nil for ncat until connectFeed
	closer []io.Closer
	done   <-chan struct{} // closed when the process has been waited for
	err    error           // cmd's exit error, valid once done is closed
}

// targetConfig says what to start.
type targetConfig struct {
	name      string // "chattyd", "ncat" or "nats"
	bin       string // chattyd binary (ncat or nats-server, found in PATH by default)
	config    string // chattyd --config FILE, optional
	extraArgs []string
	subs      int    // subscribers, to size ncat's connection limit
	logPath   string // server stdout and stderr go here
}

// startTarget starts the server in its own process group listening on addr.
func startTarget(tc targetConfig, addr string) (*target, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	t := &target{name: tc.name, addr: addr}
	var args []string
	var sock string
	bin := tc.bin
	switch tc.name {
	case "chattyd":
		// A control socket of its own, so that a benchmark never meets
		// another chattyd's, in a private directory: chattyd refuses a
		// socket directory others may write to, such as /tmp.
		dir, err := os.MkdirTemp("", "chattyload-")
		if err != nil {
			return nil, fmt.Errorf("control socket directory: %w", err)
		}
		t.closer = append(t.closer, removeDir(dir))
		sock = filepath.Join(dir, "control.sock")
		args = []string{"--listen", addr, "--workers", "0", "--log-format", "text"}
		if tc.config != "" {
			args = append(args, "--config", tc.config)
		}
	case "ncat":
		if bin == "" {
			bin = "ncat"
		}
		// -m: ncat's broker refuses clients beyond 100 by default.
		args = []string{"--listen", "--broker", "--nodns", "--max-conns", strconv.Itoa(tc.subs + 16), host, port}
	case "nats":
		if bin == "" {
			bin = "nats-server"
		}
		// No auth, no monitoring, no JetStream: a plain subject broker.
		args = []string{"-a", host, "-p", port}
	default:
		return nil, fmt.Errorf("unknown target %q: want chattyd, ncat or nats", tc.name)
	}
	if bin == "" {
		t.closeFiles()
		return nil, errors.New("-target chattyd needs -bin PATH (build it with: go build -o bin/chattyd ./daemon)")
	}
	args = append(args, tc.extraArgs...)

	logPath := tc.logPath
	if logPath == "" {
		logPath = os.DevNull
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.closeFiles()
		return nil, fmt.Errorf("server log: %w", err)
	}
	t.closer = append(t.closer, logf)

	if tc.name == "chattyd" {
		p, err := chattydproc.Start(chattydproc.Options{
			Bin: bin, ControlSocket: sock, Args: args,
			Stdout: logf, Stderr: logf, KillWithParent: true,
		})
		if err != nil {
			t.closeFiles()
			return nil, err
		}
		// A bigger pipe lets the feeder write large batches in one go.
		_, _ = fcntl(p.Feed().Fd(), syscall.F_SETPIPE_SZ, 1<<20)
		t.proc, t.pid, t.done, t.feed = p, p.PID(), p.Done(), p.Feed()
		t.closer = append(t.closer, p.Feed())
		return t, nil
	}
	t.cmd = exec.Command(bin, args...)
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	t.cmd.Stdout, t.cmd.Stderr = logf, logf
	if err := t.cmd.Start(); err != nil {
		t.closeFiles()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	t.pid = t.cmd.Process.Pid
	done := make(chan struct{})
	t.done = done
	go func() { // owned by t: stop waits for done
		t.err = t.cmd.Wait()
		close(done)
	}()
	return t, nil
}

func fcntl(fd uintptr, cmd, arg int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, uintptr(cmd), uintptr(arg))
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// exited reports whether the server has ended, and how.
func (t *target) exited() (bool, error) {
	select {
	case <-t.done:
		if t.proc != nil {
			return true, t.proc.Err()
		}
		return true, t.err
	default:
		return false, nil
	}
}

// stop ends the whole process group: SIGTERM, then SIGKILL after grace.
// It returns once the server has been waited for, or after a hard bound.
func (t *target) stop(grace time.Duration) {
	defer t.closeFiles()
	if t.proc != nil {
		t.proc.Stop(grace)
		return
	}
	pgid := t.pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-t.done:
	case <-time.After(grace):
	}
	// Whatever the leader did, leave no member of the group behind.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-t.done:
	case <-time.After(5 * time.Second):
	}
}

// removeDir is a temporary directory removed with the target's files.
type removeDir string

func (d removeDir) Close() error { return os.RemoveAll(string(d)) }

func (t *target) closeFiles() {
	for _, c := range t.closer {
		_ = c.Close()
	}
	t.closer = nil
}

// procStat is what the tool reads about the server from /proc.
type procStat struct {
	cpu     time.Duration // utime + stime, all threads
	peakRSS int64         // VmHWM in KiB
}

// readProcStat reads /proc/PID/stat and /proc/PID/status.
func readProcStat(pid int) (procStat, error) {
	var ps procStat
	st, err := procstat.Read(pid)
	if err != nil {
		return ps, err
	}
	ps.cpu = st.CPU
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, err
	}
	ps.peakRSS = parseStatusKiB(b, "VmHWM:")
	return ps, nil
}

// readRSS returns the resident memory of pid in KiB, or -1.
func readRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	return parseStatusKiB(b, "VmRSS:")
}

// parseStatusKiB returns the value in kB of key in /proc/PID/status, or -1.
func parseStatusKiB(b []byte, key string) int64 {
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, key)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return -1
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return -1
		}
		return v
	}
	return -1
}

// selfCPU returns the tool's own user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
