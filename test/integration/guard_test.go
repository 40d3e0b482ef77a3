package integration

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// The worker guard's tests: workers that fork, and chattyd killed. Every
// process of a test carries a marker of its own in its environment
// (markEnv, given to chattyd and so inherited by every worker and what
// it starts), so that the test finds exactly its own, however they were
// reparented.

const markEnv = "CHATTY_TEST_MARK"

// guardKillTime is how soon after chattyd's death the guard must have
// killed what its workers left.
const guardKillTime = 2 * time.Second

// forkingWorker is a worker that starts a child (sleep 1000), a child
// that starts a grandchild (sleep 1001, under sleep 1002), a child in a
// session of its own (setsid sleep 1003), and becomes sleep 1004.
const forkingWorker = `  command: ["sh", "-c", "sleep 1000 & sh -c 'sleep 1001 & exec sleep 1002' & setsid sleep 1003 & exec sleep 1004"]
`

// perForkingWorker is how many processes each forkingWorker becomes, the
// worker itself included, once all have started.
const perForkingWorker = 5

// marked returns the live processes of this test other than chattyd and
// its guard: the workers and what they started.
func marked(t *testing.T, mark string, not ...int) []harness.Proc {
	t.Helper()
	return slices.DeleteFunc(harness.WithEnv(t, markEnv, mark), func(p harness.Proc) bool {
		return slices.Contains(not, p.PID)
	})
}

// startForking starts chattyd with n forking workers, marked with the
// test's name, and waits until all their processes run. It returns the
// daemon, the marker, the guard's PID and the workers' processes.
func startForking(t *testing.T, n int) (*harness.Daemon, string, int, []harness.Proc) {
	t.Helper()
	mark := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	d := harness.StartDaemon(t, harness.Options{
		Config: poolConfig(n, forkingWorker),
		Env:    []string{markEnv + "=" + mark},
	})
	t.Cleanup(func() { // whatever escapes, so that no test leaves it
		for _, p := range harness.WithEnv(t, markEnv, mark) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	})
	d.WaitWorkers(t, n, long)
	var guard int
	poll.Eventually(t, short, func() bool { guard = d.Guard(t); return guard > 0 }, "chattyd runs no worker guard")
	var ps []harness.Proc
	poll.Eventually(t, long, func() bool {
		ps = marked(t, mark, d.PID(), guard)
		return len(ps) == n*perForkingWorker
	}, fmt.Sprintf("want %d processes of %d forking workers", n*perForkingWorker, n))
	return d, mark, guard, ps
}

// inGroups splits ps into those in one of the workers' process groups
// and those that left them (setsid).
func inGroups(ps []harness.Proc, workers map[int]int) (in, left []harness.Proc) {
	groups := make(map[int]bool)
	for _, pid := range workers {
		groups[pid] = true
	}
	for _, p := range ps {
		if groups[p.PGID] {
			in = append(in, p)
		} else {
			left = append(left, p)
		}
	}
	return in, left
}

// killChattyd SIGKILLs chattyd and checks that within guardKillTime no
// process is left in its workers' groups; it returns those that had left
// the groups and still run.
func killChattyd(t *testing.T, d *harness.Daemon, mark string, workers map[int]int) []harness.Proc {
	t.Helper()
	d.Signal(syscall.SIGKILL)
	var in, left []harness.Proc
	deadline := time.Now().Add(guardKillTime)
	for in, left = inGroups(marked(t, mark), workers); len(in) > 0; in, left = inGroups(marked(t, mark), workers) {
		if time.Now().After(deadline) {
			t.Fatalf("%s after SIGKILL to chattyd, processes of its workers' groups still run: %v", guardKillTime, in)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code := d.Wait(long); code != -1 {
		t.Errorf("exit status %d, want -1 (killed)", code)
	}
	return left
}

// SIGKILL to chattyd: the workers die by their parent-death signal, and
// the guard kills what they started in their process groups, children
// and grandchildren, within guardKillTime. A process that left its
// worker's group (setsid) is beyond the guard without systemd
// (docs/systemd.md); the test shows it is the only kind left.
func TestGuardKillsWorkersChildrenWhenChattydKilled(t *testing.T) {
	t.Parallel()
	const n = 3
	d, mark, guard, ps := startForking(t, n)
	workers := d.Workers(t)
	in, left := inGroups(ps, workers)
	if len(in) != n*(perForkingWorker-1) || len(left) != n {
		t.Fatalf("before the kill: %d processes in the workers' groups and %d outside, want %d and %d", len(in), len(left), n*(perForkingWorker-1), n)
	}

	after := killChattyd(t, d, mark, workers)
	harness.WaitGone(t, short, guard)
	if !strings.Contains(d.Log(), "chattyd has gone; killed the process groups of its workers: ") {
		t.Errorf("the guard did not log what it killed:\n%s", d.Log())
	}
	for _, p := range after {
		args := harness.Cmdline(p.PID)
		if len(args) == 0 {
			continue // gone or a zombie since it was listed: it did not outlive chattyd
		}
		if !slices.Equal(args, []string{"sleep", "1003"}) {
			t.Errorf("process %d %v outlived chattyd, and is not the setsid child", p.PID, args)
		}
	}
	t.Logf("outside the workers' groups, %d setsid children were left to systemd's cgroup (none here; cleaned up by the test)", len(after))
}

// A guard that is killed is noticed and replaced; the new one knows the
// groups of the workers that were already running, so killing chattyd
// afterwards still leaves nothing in them.
func TestGuardReplacedWhenKilled(t *testing.T) {
	t.Parallel()
	const n = 2
	d, mark, guard, _ := startForking(t, n)
	workers := d.Workers(t)

	since := d.LogLen()
	if err := syscall.Kill(guard, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.WaitLogSince(t, since, fmt.Sprintf("The worker guard (process %d) ended unexpectedly (killed by signal 9); starting a new one", guard), short)
	var next int
	poll.Eventually(t, short, func() bool { next = d.Guard(t); return next > 0 && next != guard },
		fmt.Sprintf("no new guard replaced process %d", guard))
	if got := d.Workers(t); !maps.Equal(got, workers) {
		t.Fatalf("workers %v after the guard's death, want %v untouched", got, workers)
	}
	// The new guard's ready and told; a fresh worker adds its group too.
	since = d.LogLen()
	if err := syscall.Kill(workers[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.WaitLogSince(t, since, "[process: 1] Process terminated (killed by signal 9) and was restarted", short)
	poll.Eventually(t, long, func() bool {
		w := d.Workers(t)
		return len(w) == n && w[1] != workers[1] && len(marked(t, mark, d.PID(), next)) >= n*perForkingWorker
	}, "slot 1's worker was not restarted with all its processes")
	workers = d.Workers(t)

	killChattyd(t, d, mark, workers)
	harness.WaitGone(t, short, next)
}

// A normal stop: chattyd stops its workers and their groups, then the
// guard, which exits without a word and without killing anything.
func TestGuardQuietOnStop(t *testing.T) {
	t.Parallel()
	const n = 2
	d, mark, guard, _ := startForking(t, n)
	workers := d.Workers(t)
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(long); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
	if harness.Exists(guard) {
		t.Errorf("the guard %d is still there after chattyd exited", guard)
	}
	in, _ := inGroups(marked(t, mark), workers)
	if len(in) > 0 {
		t.Errorf("processes of the workers' groups outlived chattyd: %v", in)
	}
	log := d.Log()
	for _, bad := range []string{"guard", "Guard"} {
		for line := range strings.Lines(log) {
			if strings.Contains(line, bad) {
				t.Errorf("a normal stop logged about the guard: %q", line)
			}
		}
	}
}
