package harness

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/procstat"
)

// Proc is a process and what /proc/PID/stat says about it.
type Proc struct {
	PID int
	procstat.Stat
}

// ReadProc reads /proc/PID/stat. It fails with an error wrapping
// os.ErrNotExist when there is no such process, not even a zombie.
func ReadProc(pid int) (Proc, error) {
	s, err := procstat.Read(pid)
	if err != nil {
		return Proc{}, err
	}
	return Proc{PID: pid, Stat: s}, nil
}

// Procs returns every process in /proc that match keeps, zombies included.
// Processes that vanish while /proc is read are skipped.
func Procs(tb testing.TB, match func(Proc) bool) []Proc {
	tb.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		tb.Fatalf("list processes: %v", err)
	}
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := ReadProc(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if match(p) {
			out = append(out, p)
		}
	}
	return out
}

// Children returns the child processes of pid, zombies included, by PID.
func Children(tb testing.TB, pid int) []Proc {
	tb.Helper()
	ps := Procs(tb, func(p Proc) bool { return p.PPID == pid })
	slices.SortFunc(ps, func(a, b Proc) int { return a.PID - b.PID })
	return ps
}

// Group returns the processes of process group pgid, zombies included.
func Group(tb testing.TB, pgid int) []Proc {
	tb.Helper()
	return Procs(tb, func(p Proc) bool { return p.PGID == pgid })
}

// Alive reports whether pid names a process that has not exited: it is
// in /proc and not a zombie.
func Alive(pid int) bool { return procstat.Alive(pid) }

// Exists reports whether pid is in /proc at all, zombies included.
func Exists(pid int) bool {
	_, err := ReadProc(pid)
	return err == nil
}

// Env returns the value of the environment variable name in process pid's
// initial environment, and whether it is set there. Between fork and exec
// a child still shows its parent's environment.
func Env(pid int, name string) (string, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		return "", false
	}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if k, v, ok := bytes.Cut(kv, []byte{'='}); ok && string(k) == name {
			return string(v), true
		}
	}
	return "", false
}

// Comm returns process pid's command name (/proc/PID/comm), which
// changes at exec; "" if it cannot be read.
func Comm(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

// Workers returns chattyd's running worker processes by pool slot: its
// children that are not zombies and have CHATTY_SLOT in their environment
// (a child not yet past exec has not).
func (d *Daemon) Workers(tb testing.TB) map[int]int {
	tb.Helper()
	ws := make(map[int]int)
	for _, p := range Children(tb, d.PID()) {
		if p.Zombie() {
			continue
		}
		v, ok := Env(p.PID, "CHATTY_SLOT")
		if !ok {
			continue
		}
		slot, err := strconv.Atoi(v)
		if err != nil {
			tb.Fatalf("process %d: CHATTY_SLOT=%q is not a number", p.PID, v)
		}
		if old, dup := ws[slot]; dup {
			tb.Fatalf("slot %d has two running workers, processes %d and %d", slot, old, p.PID)
		}
		ws[slot] = p.PID
	}
	return ws
}

// WaitWorkers polls until chattyd's running workers are exactly in slots
// 1..n and returns them by slot.
func (d *Daemon) WaitWorkers(tb testing.TB, n int, timeout time.Duration) map[int]int {
	tb.Helper()
	var ws map[int]int
	full := func() bool {
		ws = d.Workers(tb)
		if len(ws) != n {
			return false
		}
		for s := 1; s <= n; s++ {
			if _, ok := ws[s]; !ok {
				return false
			}
		}
		return true
	}
	if poll.Until(context.Background(), timeout, full) != nil {
		tb.Fatalf("after %s: chattyd's workers by slot are %v, want slots 1 to %d", timeout, ws, n)
	}
	return ws
}

// WaitGone polls until none of pids is alive (a zombie counts as gone),
// and fails the test naming the survivors otherwise.
func WaitGone(tb testing.TB, timeout time.Duration, pids ...int) {
	tb.Helper()
	var alive []int
	gone := func() bool {
		alive = slices.DeleteFunc(slices.Clone(pids), func(pid int) bool { return !Alive(pid) })
		return len(alive) == 0
	}
	if poll.Until(context.Background(), timeout, gone) != nil {
		tb.Fatalf("after %s these processes are still running: %v", timeout, alive)
	}
}

// KillGroupOnCleanup SIGKILLs process group pgid when the test ends, for
// processes a test expects might escape chattyd.
func KillGroupOnCleanup(tb testing.TB, pgid int) {
	tb.Helper()
	if pgid <= 1 {
		tb.Fatalf("KillGroupOnCleanup: refusing process group %d", pgid)
	}
	tb.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
}

// Cmdline returns process pid's arguments (/proc/PID/cmdline); nil if
// they cannot be read.
func Cmdline(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// Guard returns the PID of chattyd's running worker guard ("chattyd
// guard", a child of chattyd), or 0 if it has none.
func (d *Daemon) Guard(tb testing.TB) int {
	tb.Helper()
	for _, p := range Children(tb, d.PID()) {
		if args := Cmdline(p.PID); !p.Zombie() && len(args) == 2 && args[1] == "guard" {
			return p.PID
		}
	}
	return 0
}

// WithEnv returns the live processes whose initial environment sets
// name to value.
func WithEnv(tb testing.TB, name, value string) []Proc {
	tb.Helper()
	return Procs(tb, func(p Proc) bool {
		v, ok := Env(p.PID, name)
		return ok && v == value && !p.Zombie()
	})
}
