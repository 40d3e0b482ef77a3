package pool

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/procstat"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/chatty-dev/chatty/internal/logging"
)

// guardHelperArg makes the test binary run as the guard, RunGuard on its
// standard input, whatever its environment says (it inherits a stand-in
// daemon's helperEnv).
const guardHelperArg = "guard-helper"

func guardHelper() int {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	l.SetFormatter(&logging.TextFormatter{NoTime: true})
	if err := RunGuard(os.Stdin, os.Stdout, logrus.NewEntry(l)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// guardTestCommand is the guard's command for the tests' pools.
func guardTestCommand() []string { return []string{os.Args[0], guardHelperArg} }

func TestParseGuardRecord(t *testing.T) {
	tests := []struct {
		rec  string
		pgid int
		add  bool
		ok   bool
	}{
		{"+1234", 1234, true, true},
		{"-1234", 1234, false, true},
		{"+2", 2, true, true},
		{"+4194304", 4194304, true, true},
		{"+4194305", 0, false, false},
		{"+1", 0, false, false}, // kill(-1) is every process
		{"+0", 0, false, false}, // kill(0) is the guard's own group
		{"+-5", 0, false, false},
		{"++5", 0, false, false},
		{"+ 5", 0, false, false},
		{"+5 ", 0, false, false},
		{"5", 0, false, false},
		{"+", 0, false, false},
		{"", 0, false, false},
		{"*5", 0, false, false},
		{"+99999999999999999999999", 0, false, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.rec), func(t *testing.T) {
			pgid, add, err := parseGuardRecord([]byte(tt.rec))
			if (err == nil) != tt.ok || pgid != tt.pgid || add != tt.add {
				t.Errorf("parseGuardRecord(%q) = %d, %v, %v; want %d, %v, ok=%v", tt.rec, pgid, add, err, tt.pgid, tt.add, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), strconv.Quote(tt.rec)) {
				t.Errorf("error %q does not name the record", err)
			}
		})
	}
}

// FuzzParseGuardRecord: no input panics, and only a process group above
// 1 is ever accepted, which guardRecord writes back as the same bytes.
func FuzzParseGuardRecord(f *testing.F) {
	for _, s := range []string{"+1234", "-1234", "+1", "+0", "-", "+007", "+4194304"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		pgid, add, err := parseGuardRecord(rec)
		if err != nil {
			return
		}
		if pgid <= 1 {
			t.Fatalf("%q accepted as process group %d", rec, pgid)
		}
		again, add2, err := parseGuardRecord(guardRecord(pgid, add))
		if err != nil || again != pgid || add2 != add {
			t.Fatalf("%q: written back as %q, read as %d, %v, %v", rec, guardRecord(pgid, add), again, add2, err)
		}
	})
}

// sleepGroup starts sleep in a process group of its own and returns it.
func sleepGroup(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// exitedWithin reports whether cmd exits within d, without reaping it.
func exitedWithin(cmd *exec.Cmd, d time.Duration) bool {
	exited := make(chan struct{})
	go watchExit(cmd.Process.Pid, exited)
	select {
	case <-exited:
		return true
	case <-time.After(d):
		return false
	}
}

// The guard alone: when its pipe ends it kills the groups it was told of
// and not told to forget, ignores bad records, and says nothing when it
// kills nothing.
func TestRunGuard(t *testing.T) {
	kept, forgotten := sleepGroup(t), sleepGroup(t)
	guard := exec.Command(os.Args[0], guardHelperArg)
	in, err := guard.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	ready, err := guard.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	guard.Stderr = &stderr
	guard.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if err := guard.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(ready).ReadString('\n')
	if err != nil || line != guardReady {
		t.Fatalf("the guard said %q, %v; want %q", line, err, guardReady)
	}
	fmt.Fprintf(in, "+%d\n+%d\n+1\nnonsense\n%s\n-%d\n",
		kept.Process.Pid, forgotten.Process.Pid, strings.Repeat("9", 5000), forgotten.Process.Pid)
	if exitedWithin(kept, 200*time.Millisecond) {
		t.Fatal("the guard killed a group before its pipe ended")
	}
	in.Close()
	if err := guard.Wait(); err != nil {
		t.Errorf("the guard exited with %v, want 0; stderr:\n%s", err, stderr.String())
	}
	if !exitedWithin(kept, wait) {
		t.Errorf("the guard left process group %d alive", kept.Process.Pid)
	}
	if exitedWithin(forgotten, 200*time.Millisecond) {
		t.Errorf("the guard killed process group %d, which it had been told to forget", forgotten.Process.Pid)
	}
	log := stderr.String()
	for _, want := range []string{
		fmt.Sprintf("killed the process groups of its workers: [%d]", kept.Process.Pid),
		`guard record "+1": process group must be from 2`,
		`guard record "nonsense" is not +PGID or -PGID`,
		"guard record longer than",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the guard's log does not say %q:\n%s", want, log)
		}
	}
}

// A daemon killed with SIGKILL: the guard kills what its workers started
// in their groups, as well as the workers themselves dying by their
// parent-death signal. Without a guard (TestWorkersDieWithTheDaemon) the
// workers' children would live on.
func TestGuardKillsGroupsWhenTheDaemonDies(t *testing.T) {
	daemon, pids := startStandInDaemon(t, "pool-guarded")
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(-pid, syscall.SIGKILL)
		}
	})
	for _, pid := range pids {
		poll.Eventually(t, wait, func() bool { return len(groupMembers(pid)) == 2 }, fmt.Sprintf("worker %d has started its child", pid))
	}
	daemon.Process.Kill()
	daemon.Wait()
	deadline := time.Now().Add(wait)
	for _, pid := range pids {
		for len(groupMembers(pid)) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s after the daemon's death, worker %d's group still has %v", wait, pid, groupMembers(pid))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// guardPIDs returns the test process's running guards.
func guardPIDs(t *testing.T) []int {
	t.Helper()
	var out []int
	for _, pid := range childPIDs(os.Getpid()) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.HasSuffix(string(b), "\x00"+guardHelperArg+"\x00") && procstat.Alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// childPIDs returns the PIDs of pid's children, from /proc.
func childPIDs(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, err := procstat.Read(n); err == nil && s.PPID == pid {
			out = append(out, n)
		}
	}
	return out
}

// The pool starts its guard with the first worker, replaces one that is
// killed without touching the workers, and on stop ends it quietly.
func TestPoolReplacesItsGuard(t *testing.T) {
	o := testOptions("sleep", 2)
	o.Guard = guardTestCommand()
	tp := startPool(t, o)
	before := tp.waitRunning(t, 2)
	var guards []int
	poll.Eventually(t, wait, func() bool { guards = guardPIDs(t); return len(guards) == 1 }, "one guard runs")
	old := guards[0]

	if err := unix.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tp.logs.waitFor(t, 1, fmt.Sprintf(`^The worker guard \(process %d\) ended unexpectedly \(killed by signal 9\); starting a new one$`, old), 0)
	poll.Eventually(t, wait, func() bool { guards = guardPIDs(t); return len(guards) == 1 && guards[0] != old }, "a new guard runs")
	next := guards[0]
	for s, st := range tp.running() {
		if st.PID != before[s].PID {
			t.Errorf("slot %d's worker changed from %d to %d with the guard", s, before[s].PID, st.PID)
		}
	}

	tp.stop(t)
	if procstat.Alive(next) || slices.Contains(childPIDs(os.Getpid()), next) {
		t.Errorf("the guard %d outlived the pool's Run, or was left unreaped", next)
	}
	if bad := tp.logs.matching(`guard`, 0); len(bad) != 1 {
		t.Errorf("the pool logged %d lines about its guard, want only the unexpected end: %v", len(bad), bad)
	}
}

// A pool without workers runs no guard: none before the first worker,
// and the guard ends, quietly, when the pool is scaled to 0; scaled up
// again, a new one starts.
func TestPoolWithoutWorkersHasNoGuard(t *testing.T) {
	o := testOptions("sleep", 0)
	o.Guard = guardTestCommand()
	tp := startPool(t, o)
	tp.logs.waitFor(t, 1, `^Starting 0 workers$`, 0)
	if g := guardPIDs(t); len(g) > 0 {
		t.Errorf("a pool without workers runs guards %v", g)
	}

	if _, err := tp.Scale(1); err != nil {
		t.Fatal(err)
	}
	tp.waitRunning(t, 1)
	var guards []int
	poll.Eventually(t, wait, func() bool { guards = guardPIDs(t); return len(guards) == 1 }, "one guard runs")
	first := guards[0]
	if _, err := tp.Scale(0); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, wait, func() bool {
		return !slices.Contains(childPIDs(os.Getpid()), first)
	}, "the guard has ended and been reaped")
	if _, err := tp.Scale(1); err != nil {
		t.Fatal(err)
	}
	tp.waitRunning(t, 1)
	poll.Eventually(t, wait, func() bool { guards = guardPIDs(t); return len(guards) == 1 && guards[0] != first }, "a new guard runs")
	if bad := tp.logs.matching(`guard`, 0); len(bad) > 0 {
		t.Errorf("the pool logged about its guard: %v", bad)
	}
}
