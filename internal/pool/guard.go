package pool

// The worker guard. The parent-death signal kills each worker when
// chattyd dies, but not what the worker started: a shell's background
// jobs, a wrapper's program, a runtime's helpers would be reparented and
// live on. So the pool runs one more process, the guard ("chattyd guard",
// Options.Guard), and tells it, over a pipe, the process group of every
// worker it starts ("+PGID\n", sent the moment the worker has started)
// and forgets ("-PGID\n", sent before the pool reaps the worker, so the
// number still names that group). When its end of the pipe ends, the
// guard reads what is left, SIGKILLs every group it still knows, and
// exits. The kernel closes chattyd's end whichever way chattyd dies,
// SIGKILL and the OOM killer included; on a normal stop the pool closes it
// after reaping every worker, so the guard knows no group and exits
// without a word.
//
// The guard's own parent-death signal is SIGTERM, which it catches: when
// its parent is gone it gives the pipe drainTimeout to end and then kills
// what it knows. A SIGTERM while chattyd lives is ignored, as are SIGINT,
// SIGHUP and SIGQUIT (it shares chattyd's process group and terminal).
//
// A guard that dies is noticed, logged and replaced at once; the new one
// is told every group the pool still has before any other record, and no
// worker starts while there is no guard. The first worker's start starts
// the guard; when the pool has no slot left, the guard is ended quietly.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

const (
	// guardReady is what the guard writes on its standard output once
	// its signal handlers are set up.
	guardReady = "ready\n"
	// guardStartTimeout bounds how long the pool waits for guardReady.
	guardStartTimeout = 10 * time.Second
	// guardWriteTimeout bounds one record's write; a guard that reads
	// nothing for that long is killed and replaced.
	guardWriteTimeout = time.Second
	// drainTimeout is how long a guard whose parent has died waits for
	// the pipe to end before it kills what it knows.
	drainTimeout = time.Second
	// guardMinLife is how long a guard must live for its replacement to
	// start at once; guards that keep dying younger are replaced after
	// the pool's growing backoff.
	guardMinLife = time.Second
)

// errGuard marks a worker start refused because no guard could be started.
var errGuard = errors.New("the worker guard is not running")

// parseGuardRecord reads one record, without its newline: "+PGID" (a
// worker's group to kill should chattyd die) or "-PGID" (forget it). A
// group must be above 1: kill(-1) and kill(0) would mean every process
// and the guard's own group.
func parseGuardRecord(rec []byte) (pgid int, add bool, err error) {
	if len(rec) < 2 || (rec[0] != '+' && rec[0] != '-') {
		return 0, false, fmt.Errorf("guard record %q is not +PGID or -PGID", rec)
	}
	digits := rec[1:]
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false, fmt.Errorf("guard record %q: %q is not a process group number", rec, digits)
		}
	}
	n, err := strconv.Atoi(string(digits))
	if err != nil || n <= 1 || n > 1<<22 { // pid_max is at most 2^22
		return 0, false, fmt.Errorf("guard record %q: process group must be from 2 to %d", rec, 1<<22)
	}
	return n, rec[0] == '+', nil
}

func guardRecord(pgid int, add bool) []byte {
	sign := byte('-')
	if add {
		sign = '+'
	}
	return strconv.AppendInt([]byte{sign}, int64(pgid), 10)
}

// guardSet is the guard's set of live process groups.
type guardSet struct {
	mu     sync.Mutex // guards groups
	groups map[int]struct{}
}

// read applies the records from r until r ends or fails.
func (g *guardSet) read(r io.Reader, log *logrus.Entry) error {
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && err == nil {
			pgid, add, perr := parseGuardRecord(line[:len(line)-1])
			if perr != nil {
				log.Warn(perr)
				continue
			}
			g.mu.Lock()
			if add {
				g.groups[pgid] = struct{}{}
			} else {
				delete(g.groups, pgid)
			}
			g.mu.Unlock()
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			log.Warnf("guard record longer than %d bytes; skipping it", br.Size())
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == nil {
				continue
			}
		}
		return err
	}
}

// killAll SIGKILLs every group in the set and returns them, sorted.
func (g *guardSet) killAll() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var killed []int
	for pgid := range g.groups {
		_ = unix.Kill(-pgid, unix.SIGKILL) // a group already gone is fine
		killed = append(killed, pgid)
	}
	slices.Sort(killed)
	return killed
}

// RunGuard is the whole life of the worker guard, "chattyd guard": it
// reads the pool's records from in (its standard input, a pipe from
// chattyd), first writing guardReady to ready, and when in ends kills the
// process groups it still knows and returns. It takes the process's
// SIGTERM, SIGINT, SIGHUP and SIGQUIT; it logs only when it kills.
func RunGuard(in *os.File, ready io.Writer, log *logrus.Entry) error {
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	defer signal.Stop(term)
	parent := os.Getppid()

	// Through the runtime's poller, so that a read deadline can end the
	// read should the pipe never end.
	fd := int(in.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("guard: standard input: %w", err)
	}
	pipe := os.NewFile(uintptr(fd), in.Name())

	if _, err := io.WriteString(ready, guardReady); err != nil {
		return fmt.Errorf("guard: say ready: %w", err)
	}
	g := &guardSet{groups: make(map[int]struct{})}
	done := make(chan error, 1)
	go func() { done <- g.read(pipe, log) }()
	for {
		select {
		case err := <-done:
			if killed := g.killAll(); len(killed) > 0 {
				log.Warnf("chattyd has gone; killed the process groups of its workers: %v", killed)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("guard: read the pool's records: %w", err)
		case <-term:
			if os.Getppid() != parent {
				_ = pipe.SetReadDeadline(time.Now().Add(drainTimeout))
			}
		}
	}
}

// guardian is the pool's side of the guard.
type guardian struct {
	command []string // the guard's command; nil runs none
	log     *logrus.Entry
	lost    chan struct{} // receives a value when a guard died unasked
	wg      sync.WaitGroup

	mu      sync.Mutex       // guards the fields below
	groups  map[int]struct{} // groups of the workers started and not yet reaped
	cur     *guardProc       // the running guard; nil while none is
	stopped bool             // the pool is shutting down: start no guard
}

// guardProc is one guard process.
type guardProc struct {
	cmd    *exec.Cmd
	w      *os.File // the write end of its pipe
	exited chan struct{}
}

func newGuardian(command []string, log *logrus.Entry) *guardian {
	return &guardian{
		command: slices.Clone(command),
		log:     log,
		lost:    make(chan struct{}, 1),
		groups:  make(map[int]struct{}),
	}
}

// ensure starts a guard unless one runs. It must be called from the
// forking goroutine, whose thread the guard's parent-death signal is tied
// to.
func (g *guardian) ensure() error {
	if g.command == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur != nil || g.stopped {
		return nil
	}
	gp, err := g.startLocked()
	if err != nil {
		return fmt.Errorf("%w: %w", errGuard, err)
	}
	g.cur = gp
	g.wg.Add(1)
	go g.watch(gp)
	return nil
}

// startLocked starts a guard, waits until it is ready and tells it every
// group the pool has.
func (g *guardian) startLocked() (*guardProc, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("guard pipe: %w", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return nil, fmt.Errorf("guard pipe: %w", err)
	}
	cmd := exec.Command(g.command[0], g.command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, readyW, os.Stderr
	// Not SIGKILL: the guard must outlive chattyd long enough to kill.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	err = cmd.Start()
	closeAll(inR, readyW)
	if err != nil {
		closeAll(inW, readyR)
		return nil, fmt.Errorf("start %q: %w", cmd.Path, err)
	}
	gp := &guardProc{cmd: cmd, w: inW, exited: make(chan struct{})}
	go watchExit(cmd.Process.Pid, gp.exited)

	buf := make([]byte, len(guardReady))
	_ = readyR.SetReadDeadline(time.Now().Add(guardStartTimeout))
	_, err = io.ReadFull(readyR, buf)
	readyR.Close()
	if err == nil && string(buf) != guardReady {
		err = fmt.Errorf("it said %q, not %q", buf, guardReady)
	}
	if err == nil {
		var batch []byte
		for pgid := range g.groups {
			batch = append(append(batch, guardRecord(pgid, true)...), '\n')
		}
		err = writeRecords(gp.w, batch)
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-gp.exited
		_ = cmd.Wait()
		inW.Close()
		return nil, fmt.Errorf("guard %q (process %d) did not start: %w (%s)", cmd.Path, cmd.Process.Pid, err, describe(cmd.ProcessState))
	}
	return gp, nil
}

// writeRecords writes p to the guard's pipe within guardWriteTimeout.
func writeRecords(w *os.File, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	_ = w.SetWriteDeadline(time.Now().Add(guardWriteTimeout))
	_, err := w.Write(p)
	return err
}

// add records a started worker's group and tells the guard. It must be
// called from the forking goroutine, right after the start.
func (g *guardian) add(pgid int) { g.update(pgid, true) }

// forget tells the guard that the group is no longer the pool's. It must
// be called before the worker that leads it is reaped.
func (g *guardian) forget(pgid int) { g.update(pgid, false) }

func (g *guardian) update(pgid int, add bool) {
	if g.command == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if add {
		g.groups[pgid] = struct{}{}
	} else {
		delete(g.groups, pgid)
	}
	if g.cur == nil {
		return // the next guard is told every group when it starts
	}
	if err := writeRecords(g.cur.w, append(guardRecord(pgid, add), '\n')); err != nil {
		// It is dead or stuck. Either way a new one, told everything,
		// takes its place.
		g.log.Errorf("Cannot tell the worker guard (process %d) about process group %d: %v; replacing it", g.cur.cmd.Process.Pid, pgid, err)
		_ = g.cur.cmd.Process.Kill()
		// It is no longer the guard: no worker starts under it, and its
		// end, already reported here, is not reported again by watch.
		g.cur = nil
		select {
		case g.lost <- struct{}{}:
		default:
		}
	}
}

// watch waits until gp exits and reaps it; a guard that ends while it is
// still current died unasked, and is reported on lost.
func (g *guardian) watch(gp *guardProc) {
	defer g.wg.Done()
	<-gp.exited
	g.mu.Lock()
	unasked := g.cur == gp
	if unasked {
		g.cur = nil
	}
	g.mu.Unlock()
	_ = gp.cmd.Wait()
	gp.w.Close()
	if !unasked {
		return
	}
	how := describe(gp.cmd.ProcessState)
	g.log.Errorf("The worker guard (process %d) ended unexpectedly (%s); starting a new one", gp.cmd.Process.Pid, how)
	select {
	case g.lost <- struct{}{}:
	default:
	}
}

// retireIdle ends the running guard if the pool has no worker left, as
// when it is scaled to 0: closing its pipe makes it exit without a word,
// and watch reaps it. It must be called from the forking goroutine, so
// that no worker start is under way.
func (g *guardian) retireIdle() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil || len(g.groups) > 0 {
		return
	}
	g.cur.w.Close()
	g.cur = nil
}

// stop ends the running guard, if any: the pool has reaped every worker,
// so closing its pipe makes it exit without killing anything. It waits
// for every guard process to be reaped.
func (g *guardian) stop(timeout time.Duration) {
	g.mu.Lock()
	g.stopped = true
	gp := g.cur
	g.cur = nil
	g.mu.Unlock()
	if gp != nil {
		gp.w.Close()
		t := time.NewTimer(timeout)
		select {
		case <-gp.exited:
		case <-t.C:
			g.log.Warnf("The worker guard (process %d) did not exit within %s of the end of its pipe; sending SIGKILL", gp.cmd.Process.Pid, timeout)
			_ = gp.cmd.Process.Kill()
		}
		t.Stop()
	}
	g.wg.Wait()
}
