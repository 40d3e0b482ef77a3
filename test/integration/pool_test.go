package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// The pool tests run chattyd with real workers: the built-in one
// (chattyd re-run as "chattyd worker"), shell commands and a worker built
// from testdata. They find workers as chattyd's children with CHATTY_SLOT
// in their environment (harness.Daemon.Workers).

// poolConfig returns a configuration with size workers; pool holds more
// keys of the pool section, each line indented by two spaces.
func poolConfig(size int, pool string) string {
	return fmt.Sprintf("version: 1\npool:\n  size: %d\n%s", size, pool)
}

// longLives makes built-in workers outlive any test, so that the only
// exits are the ones a test causes.
const longLives = "  worker:\n    lifetime_min: 1h\n    lifetime_max: 1h\n"

// connectedLine is what the built-in worker in slot logs, through
// chattyd, once it has connected.
func connectedLine(slot int) string {
	return fmt.Sprintf("[process: %d] Connected to ", slot)
}

// waitConnected waits until the built-in workers in slots from..to have
// logged their connection after log offset since, and chattyd has logged
// as many new connections: once it returns, chattyd has admitted them all
// (when only workers connect) and every line fed reaches them.
func waitConnected(t *testing.T, d *harness.Daemon, since, from, to int) {
	t.Helper()
	for s := from; s <= to; s++ {
		d.WaitLogSince(t, since, connectedLine(s), long)
	}
	d.WaitLogCount(t, since, "New connection established", to-from+1, long)
}

// variedLines returns n feed lines of different lengths, so that an ack
// paired with the wrong line counts as mismatched.
func variedLines(prefix string, n int) []string {
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("%s %d %s", prefix, i, strings.Repeat("x", i%37))
	}
	return lines
}

var closedRE = regexp.MustCompile(`\[connection: (\d+)\] Connection closed (.*)`)

// closedConnections returns the fields of every "Connection closed" line
// in the log, by connection id.
func closedConnections(log string) map[string]string {
	out := make(map[string]string)
	for _, m := range closedRE.FindAllStringSubmatch(log, -1) {
		out[m[1]] = m[2]
	}
	return out
}

var ackRE = regexp.MustCompile(`\[connection: (\d+)\] << ACK_RECEIVED (\d+)`)

// checkAcks checks, in the log of a chattyd run with -v that has ended,
// that each of n connections acknowledged exactly lines, in order, and
// closed having been sent them all, with every ack counted good.
func checkAcks(t *testing.T, log string, n int, lines []string) {
	t.Helper()
	want := make([]string, len(lines))
	for i, l := range lines {
		want[i] = strconv.Itoa(len(l))
	}
	got := make(map[string][]string)
	for _, m := range ackRE.FindAllStringSubmatch(log, -1) {
		got[m[1]] = append(got[m[1]], m[2])
	}
	if len(got) != n {
		t.Fatalf("%d connections sent acks, want %d", len(got), n)
	}
	for id, acks := range got {
		if diff := diffLines(acks, want); diff != "" {
			t.Errorf("connection %s: the acks are not the lines' lengths in order: %s", id, diff)
		}
	}

	closed := closedConnections(log)
	if len(closed) != n {
		t.Fatalf("%d connections closed, want %d: %v", len(closed), n, closed)
	}
	for id, fields := range closed {
		if !strings.Contains(fields+" ", fmt.Sprintf("lines_sent=%d ", len(lines))) {
			t.Errorf("connection %s closed with %s; want lines_sent=%d", id, fields, len(lines))
		}
		if !strings.Contains(fields+" ", "acks_mismatched=0 ") {
			t.Errorf("connection %s closed with %s; want acks_mismatched=0", id, fields)
		}
	}
	for id, fields := range closed {
		if !strings.Contains(fields+" ", fmt.Sprintf("acks_good=%d ", len(lines))) {
			t.Errorf("connection %s closed with %s; want acks_good=%d", id, fields, len(lines))
		}
	}
}

// logTimes returns the time stamps of the log lines that contain want.
func logTimes(t *testing.T, log, want string) []time.Time {
	t.Helper()
	var ts []time.Time
	for line := range strings.Lines(log) {
		if !strings.Contains(line, want) {
			continue
		}
		const layout = "2006-01-02 15:04:05.000"
		if len(line) < len(layout) {
			t.Fatalf("log line without a time stamp: %q", line)
		}
		tm, err := time.ParseInLocation(layout, line[:len(layout)], time.Local)
		if err != nil {
			t.Fatalf("log line without a time stamp: %q: %v", line, err)
		}
		ts = append(ts, tm)
	}
	return ts
}

// pids returns the values of ws, sorted.
func pids(ws map[int]int) []int {
	out := make([]int, 0, len(ws))
	for _, pid := range ws {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}

// Every worker acknowledges every line, and chattyd finds each ack right.
func TestPoolWorkersAckEveryLine(t *testing.T) {
	t.Parallel()
	const n, k = 4, 200
	d := harness.StartDaemon(t, harness.Options{Config: poolConfig(n, longLives), Args: []string{"-v"}})
	waitConnected(t, d, 0, 1, n)

	since := d.LogLen()
	lines := variedLines("ack", k)
	d.Feed(lines...)
	// -v logs every ack received; wait for all of them before stopping,
	// since a stopping worker does not finish its acks.
	d.WaitLogCount(t, since, "<< ACK_RECEIVED ", n*k, long)
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(long); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
	checkAcks(t, d.Log(), n, lines)
}

// A worker killed with SIGKILL is replaced in its own slot; the other
// workers are left alone.
func TestPoolRespawnsKilledWorker(t *testing.T) {
	t.Parallel()
	const n, victim = 3, 2
	d := harness.StartDaemon(t, harness.Options{Config: poolConfig(n, longLives)})
	waitConnected(t, d, 0, 1, n)
	before := d.WaitWorkers(t, n, short)

	since := d.LogLen()
	if err := syscall.Kill(before[victim], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.WaitLogSince(t, since, fmt.Sprintf("[process: %d] Process terminated (killed by signal 9) and was restarted", victim), short)
	waitConnected(t, d, since, victim, victim)

	after := d.WaitWorkers(t, n, short)
	for s := 1; s <= n; s++ {
		switch {
		case s == victim && after[s] == before[s]:
			t.Errorf("slot %d still runs process %d, which was killed", s, before[s])
		case s != victim && after[s] != before[s]:
			t.Errorf("slot %d: process %d replaced by %d, but only slot %d's was killed", s, before[s], after[s], victim)
		}
	}
	if c := d.CountLog("Process terminated"); c != 1 {
		t.Errorf("%d terminations logged, want only the killed worker's:\n%s", c, d.Log())
	}
	// chattyd reaps what it started: not even a zombie is left.
	poll.Eventually(t, short, func() bool { return !harness.Exists(before[victim]) },
		fmt.Sprintf("killed worker %d was not reaped", before[victim]))
}

// Built-in workers that end their lives are restarted and logged in the
// original server's words.
func TestPoolShortLifetimesRespawn(t *testing.T) {
	t.Parallel()
	const n = 2
	d := harness.StartDaemon(t, harness.Options{Config: poolConfig(n,
		"  min_uptime: 500ms\n  worker:\n    lifetime_min: 1s\n    lifetime_max: 2s\n")})
	waitConnected(t, d, 0, 1, n)
	for s := 1; s <= n; s++ {
		// The whole line, exactly: "<time> [INFO] [process: s] Process ...".
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^[0-9-]+ [0-9:.]+ \[INFO\] \[process: %d\] Process terminated \(exited with code 2\) and was restarted$`, s))
		d.WaitLogRE(t, re, long)
		// Its replacement connects.
		d.WaitLogCount(t, 0, connectedLine(s), 2, long)
	}
	if strings.Contains(d.Log(), "next start in") {
		t.Errorf("workers that lived their lifetime were delayed as crashes:\n%s", d.Log())
	}
}

// A worker command that fails at once is retried with doubling delays,
// never in a fork storm, and chattyd keeps serving meanwhile.
func TestPoolBackoffForFailingCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		command string // YAML flow sequence
		failure string // logged at each failure, after "[process: N] "
	}{
		{"false", `["/bin/false"]`, "Process terminated (exited with code 1) and was restarted"},
		{"exit 3", `["sh", "-c", "exit 3"]`, "Process terminated (exited with code 3) and was restarted"},
		{"missing binary", `["/nonexistent/worker"]`, "Cannot start the worker: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 2
			backoff := 100 * time.Millisecond
			d := harness.StartDaemon(t, harness.Options{Config: poolConfig(n, fmt.Sprintf(
				"  command: %s\n  min_uptime: 1s\n  backoff_initial: %s\n  backoff_max: 10s\n", tc.command, backoff))})

			// The 6th failure comes at least 100+200+400+800+1600 ms
			// after the first: wait for it, so that the log covers 3 s.
			const failures = 6
			for s := 1; s <= n; s++ {
				d.WaitLogCount(t, 0, fmt.Sprintf("[process: %d] %s", s, tc.failure), failures, long)
			}
			c := harness.Dial(t, d.Addr())
			c.KeepAlive(short)

			log := d.Log()
			for s := 1; s <= n; s++ {
				ts := logTimes(t, log, fmt.Sprintf("[process: %d] %s", s, tc.failure))
				inWindow := 0
				for _, tm := range ts {
					if tm.Sub(ts[0]) < 3*time.Second {
						inWindow++
					}
				}
				if inWindow > failures {
					t.Errorf("slot %d failed %d times in 3 s, want at most %d", s, inWindow, failures)
				}
				// Each delay at least doubles; the log has milliseconds.
				want := backoff
				for i := 1; i < failures; i++ {
					if gap := ts[i].Sub(ts[i-1]); gap < want-2*time.Millisecond {
						t.Errorf("slot %d: failure %d came %s after the previous one, want at least %s", s, i+1, gap, want)
					}
					want *= 2
				}
			}
			if tc.name == "missing binary" {
				for _, want := range []string{`"/nonexistent/worker"`, "no such file or directory", "check pool.command"} {
					if !strings.Contains(log, want) {
						t.Errorf("the log does not say %q:\n%s", want, log)
					}
				}
			}
			if workers := d.Workers(t); len(workers) > 0 {
				t.Errorf("workers %v running, want none", workers)
			}
			d.Signal(syscall.SIGTERM)
			if code := d.Wait(long); code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
		})
	}
}

// Scaling by a reload of pool.size starts or stops only the difference:
// kept slots keep their processes, the highest slots go.
func TestPoolScaleBySIGHUP(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: poolConfig(4, longLives)})
	waitConnected(t, d, 0, 1, 4)
	four := d.WaitWorkers(t, 4, short)

	since := d.LogLen()
	d.WriteConfig(poolConfig(7, longLives))
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, since, "Scaling the worker pool from 4 to 7", short)
	waitConnected(t, d, since, 5, 7)
	seven := d.WaitWorkers(t, 7, short)
	for s := 1; s <= 4; s++ {
		if seven[s] != four[s] {
			t.Errorf("scaling up replaced slot %d's process %d by %d", s, four[s], seven[s])
		}
	}

	since = d.LogLen()
	d.WriteConfig(poolConfig(2, longLives))
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, since, "Scaling the worker pool from 7 to 2", short)
	for s := 3; s <= 7; s++ {
		d.WaitLogSince(t, since, fmt.Sprintf("[process: %d] Process stopped (exited with code 0)", s), long)
	}
	two := d.WaitWorkers(t, 2, short)
	for s := 1; s <= 2; s++ {
		if two[s] != four[s] {
			t.Errorf("scaling down replaced slot %d's process %d by %d", s, four[s], two[s])
		}
	}
	// chattyd is still running, so only it can have reaped the stopped
	// workers: none may be left, not even as a zombie.
	for s := 3; s <= 7; s++ {
		poll.Eventually(t, short, func() bool { return !harness.Exists(seven[s]) },
			fmt.Sprintf("slot %d's stopped worker %d is still there", s, seven[s]))
	}
	log := d.Log()
	for _, bad := range []string{"Process terminated", "[process: 1] Process stopped", "[process: 2] Process stopped"} {
		if strings.Contains(log, bad) {
			t.Errorf("the log says %q; kept workers must be left alone:\n%s", bad, log)
		}
	}
}

// A worker that ignores SIGTERM is killed stop_timeout later, when scaled
// away and at shutdown; chattyd still exits 0 and leaves nothing.
func TestPoolStopTimeoutKillsStubbornWorker(t *testing.T) {
	t.Parallel()
	cfg := func(size int) string {
		return poolConfig(size, "  command: [\"sh\", \"-c\", \"trap '' TERM; exec sleep 1000\"]\n  stop_timeout: 1s\n")
	}
	d := harness.StartDaemon(t, harness.Options{Config: cfg(2)})
	ws := d.WaitWorkers(t, 2, long)
	// Once sh has become sleep, SIGTERM is ignored.
	for s, pid := range ws {
		poll.Eventually(t, long, func() bool { return harness.Comm(pid) == "sleep" },
			fmt.Sprintf("slot %d's worker %d did not exec sleep", s, pid))
	}

	since := d.LogLen()
	d.WriteConfig(cfg(1))
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, since, "[process: 2] The worker did not stop within 1s of SIGTERM; sending SIGKILL", long)
	d.WaitLogSince(t, since, "[process: 2] Process stopped (killed by signal 9)", short)
	poll.Eventually(t, short, func() bool { return !harness.Exists(ws[2]) },
		fmt.Sprintf("slot 2's worker %d is still there", ws[2]))
	log := d.Log()[since:]
	scaled := logTimes(t, log, "Scaling the worker pool from 2 to 1")
	killed := logTimes(t, log, "[process: 2] The worker did not stop")
	if len(scaled) != 1 || len(killed) != 1 {
		t.Fatalf("want one scaling and one kill in the log:\n%s", log)
	}
	if gap := killed[0].Sub(scaled[0]); gap < time.Second-2*time.Millisecond {
		t.Errorf("SIGKILL came %s after the scale-down, before stop_timeout (1s)", gap)
	}
	if got := d.Workers(t); len(got) != 1 || got[1] != ws[1] {
		t.Errorf("workers %v after scaling to 1, want slot 1's %d only", got, ws[1])
	}

	since = d.LogLen()
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(long); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	d.WaitLogSince(t, since, "[process: 1] Process stopped (killed by signal 9)", short)
	for _, pid := range pids(ws) {
		if harness.Exists(pid) {
			t.Errorf("worker %d is still there after chattyd exited", pid)
		}
		if g := harness.Group(t, pid); len(g) > 0 {
			t.Errorf("worker %d's process group still has %v", pid, g)
		}
	}
}

// When chattyd is killed outright, its parent-death signal kills every
// worker it started, and the worker guard kills what those workers
// started in their process groups (guard_test.go has the details).
func TestPoolWorkersDieWithChattyd(t *testing.T) {
	t.Parallel()
	const n = 2
	d := harness.StartDaemon(t, harness.Options{Config: poolConfig(n,
		"  command: [\"sh\", \"-c\", \"sleep 1000 & exec sleep 1000\"]\n")})
	ws := d.WaitWorkers(t, n, long)
	var grandchildren []int
	for _, pid := range ws {
		harness.KillGroupOnCleanup(t, pid) // whatever escapes
		var g []harness.Proc
		poll.Eventually(t, long, func() bool { g = harness.Group(t, pid); return len(g) >= 2 },
			fmt.Sprintf("worker %d did not start its background sleep", pid))
		for _, p := range g {
			if p.PID != pid {
				grandchildren = append(grandchildren, p.PID)
			}
		}
	}

	d.Signal(syscall.SIGKILL)
	if code := d.Wait(long); code != -1 {
		t.Fatalf("exit status %d, want -1 (killed)", code)
	}
	harness.WaitGone(t, long, pids(ws)...)
	harness.WaitGone(t, short, grandchildren...)
}

// SIGTERM stops every worker cleanly; chattyd exits 0 having reaped them
// all.
func TestPoolSIGTERMLeavesNothing(t *testing.T) {
	t.Parallel()
	const n = 3
	d := harness.StartDaemon(t, harness.Options{Config: poolConfig(n, longLives)})
	waitConnected(t, d, 0, 1, n)
	ws := d.WaitWorkers(t, n, short)

	d.Signal(syscall.SIGTERM)
	if code := d.Wait(long); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
	// chattyd waits for each worker before it exits, so their PIDs are
	// free at once: no worker runs and none is a zombie handed to init.
	for s, pid := range ws {
		if harness.Exists(pid) {
			t.Errorf("slot %d's worker %d is still there after chattyd exited", s, pid)
		}
		if g := harness.Group(t, pid); len(g) > 0 {
			t.Errorf("slot %d's process group %d still has %v", s, pid, g)
		}
	}
	log := d.Log()
	for s := 1; s <= n; s++ {
		if want := fmt.Sprintf("[process: %d] Process stopped (exited with code 0)", s); !strings.Contains(log, want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	if !strings.Contains(log, "All workers stopped") {
		t.Error(`the log does not say "All workers stopped"`)
	}
}

// buildCustomWorker builds testdata/customworker into a temporary
// directory and returns its path.
func buildCustomWorker(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not in PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "customworker")
	cmd := exec.Command(gobin, "build", "-o", bin, "./testdata/customworker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/customworker: %v\n%s", err, out)
	}
	return bin
}

// A worker of the user's own, run through pool.command with the {addr}
// and {slot} placeholders: its output is logged under its slot, its
// environment names its slot and chattyd counts its acks.
func TestPoolCustomWorker(t *testing.T) {
	t.Parallel()
	const n, k = 2, 100
	bin := buildCustomWorker(t)
	d := harness.StartDaemon(t, harness.Options{
		Config: poolConfig(n, fmt.Sprintf("  command: [%q, \"{addr}\", \"{slot}\"]\n", bin)),
		Args:   []string{"-v"},
	})
	addr := d.Addr()
	for s := 1; s <= n; s++ {
		d.WaitLog(t, fmt.Sprintf("[process: %d] customworker: slot %d (CHATTY_SLOT=%d) connected to %s", s, s, s, addr), long)
	}
	d.WaitLogCount(t, 0, "New connection established", n, long)

	since := d.LogLen()
	lines := variedLines("custom", k)
	d.Feed(lines...)
	d.WaitLogCount(t, since, "<< ACK_RECEIVED ", n*k, long)
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(long); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
	log := d.Log()
	for s := 1; s <= n; s++ {
		for _, want := range []string{
			fmt.Sprintf("[process: %d] customworker: stopping on SIGTERM", s),
			fmt.Sprintf("[process: %d] Process stopped (exited with code 0)", s),
		} {
			if !strings.Contains(log, want) {
				t.Errorf("the log does not say %q", want)
			}
		}
	}
	checkAcks(t, log, n, lines)
}

// --workers overrides pool.size; 0 runs no worker at all.
func TestPoolWorkersFlag(t *testing.T) {
	t.Parallel()
	t.Run("0", func(t *testing.T) {
		t.Parallel()
		d := harness.StartDaemon(t, harness.Options{Config: poolConfig(3, longLives), Args: []string{"--workers", "0"}})
		d.WaitLog(t, "Starting 0 workers", short)
		c := harness.Dial(t, d.Addr())
		c.KeepAlive(short)
		if kids := harness.Children(t, d.PID()); len(kids) > 0 {
			t.Errorf("chattyd --workers 0 has child processes %v; without workers it needs no guard either", kids)
		}
		if strings.Contains(d.Log(), "[process: ") {
			t.Errorf("chattyd --workers 0 logged about workers:\n%s", d.Log())
		}
	})
	t.Run("2", func(t *testing.T) {
		t.Parallel()
		d := harness.StartDaemon(t, harness.Options{Config: poolConfig(5, longLives), Args: []string{"--workers", "2"}})
		waitConnected(t, d, 0, 1, 2)
		ws := d.WaitWorkers(t, 2, short)
		d.WaitLog(t, "Starting 2 workers", short)
		// The flag holds across a reload, as the file is read again with it.
		since := d.LogLen()
		d.WriteConfig(poolConfig(6, longLives))
		d.Signal(syscall.SIGHUP)
		d.WaitLogSince(t, since, "Configuration reloaded", short)
		c := harness.Dial(t, d.Addr())
		c.KeepAlive(short)
		if got := d.Workers(t); len(got) != 2 || got[1] != ws[1] || got[2] != ws[2] {
			t.Errorf("workers %v, want %v", got, ws)
		}
		if strings.Contains(d.Log(), "Scaling the worker pool") || strings.Contains(d.Log(), "[process: 3]") {
			t.Errorf("a third worker ran:\n%s", d.Log())
		}
		guard := d.Guard(t)
		kids := slices.DeleteFunc(harness.Children(t, d.PID()), func(p harness.Proc) bool { return p.PID == guard })
		if guard == 0 || len(kids) != 2 {
			t.Errorf("chattyd has children %v and guard %d, want its 2 workers and a guard", kids, guard)
		}
	})
}
