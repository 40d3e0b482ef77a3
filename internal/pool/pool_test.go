package pool

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/procstat"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

func TestSlotsComeUpWithTheirArguments(t *testing.T) {
	tp := startPool(t, testOptions("sleep", 3))
	got := tp.waitRunning(t, 3)
	for i := 1; i <= 3; i++ {
		want := fmt.Sprintf("ready pid=%d slot=%d addr=127.0.0.1:54321 args=%d,127.0.0.1:54321,127.0.0.1:54321", got[i].PID, i, i)
		if len(tp.logs.matching("^"+want+"$", i)) != 1 {
			t.Errorf("slot %d: no log line %q", i, want)
		}
		if got[i].Started.IsZero() || got[i].Restarts != 0 {
			t.Errorf("slot %d: status %+v", i, got[i])
		}
		if pgid, err := unix.Getpgid(got[i].PID); err != nil || pgid != got[i].PID {
			t.Errorf("slot %d: worker %d is in process group %d (%v), want its own", i, got[i].PID, pgid, err)
		}
	}
	if n := tp.Size(); n != 3 {
		t.Errorf("Size() = %d, want 3", n)
	}
	tp.stop(t)
	if n := len(tp.logs.matching("and was restarted", 0)); n != 0 {
		t.Errorf("%d workers were restarted during shutdown", n)
	}
	if n := len(tp.logs.matching(`^Process stopped \(exited with code 0\)$`, 0)); n != 3 {
		t.Errorf("%d workers logged a clean stop, want 3", n)
	}
}

func TestKilledWorkerIsRespawned(t *testing.T) {
	tp := startPool(t, testOptions("sleep", 2))
	before := tp.waitRunning(t, 2)
	if err := unix.Kill(before[2].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tp.logs.waitFor(t, 1, `^Process terminated \(killed by signal 9\) and was restarted$`, 2)
	after := tp.waitReplaced(t, before, 2)
	if after[1].PID != before[1].PID {
		t.Errorf("slot 1 changed from %d to %d; only slot 2 should restart", before[1].PID, after[1].PID)
	}
	if after[2].Restarts != 1 || after[2].LastExit != "killed by signal 9" {
		t.Errorf("slot 2 status %+v, want 1 restart after signal 9", after[2])
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	o := testOptions("exit3", 1)
	tp := startPool(t, o)
	exits := tp.logs.waitFor(t, 5, `^Process terminated \(exited with code 3\) and was restarted$`, 1)
	// After the k-th quick exit the next start waits 50, 100, 200, 400 ms.
	want := []time.Duration{50, 100, 200, 400}
	for k := range want {
		gap := exits[k+1].time.Sub(exits[k].time)
		if gap < want[k]*time.Millisecond {
			t.Errorf("exit %d came %s after exit %d, want at least %dms of backoff", k+2, gap, k+1, want[k])
		}
	}
	if n := len(tp.logs.matching(`next start in`, 1)); n < 5 {
		t.Errorf("%d backoff warnings, want one per exit", n)
	}
	if st := tp.Slots(); len(st) != 1 || st[0].Restarts < 4 || st[0].LastExit != "exited with code 3" {
		t.Errorf("Slots() = %+v", st)
	}
}

func TestMissingProgramBacksOff(t *testing.T) {
	o := testOptions("sleep", 2)
	o.Command = []string{"/nonexistent/chatty-worker", "--slot", "{slot}"}
	tp := startPool(t, o)
	fails := tp.logs.waitFor(t, 3, `^Cannot start the worker: .*/nonexistent/chatty-worker.*no such file or directory`, 2)
	if gap := fails[2].time.Sub(fails[1].time); gap < 100*time.Millisecond {
		t.Errorf("second retry came %s after the first, want at least 100ms of backoff", gap)
	}
	select {
	case err := <-tp.result:
		t.Fatalf("Run returned %v while a program is missing, want it to keep running", err)
	default:
	}
	// A reload that fixes the command heals the pool.
	fixed := testOptions("sleep", 2)
	if err := tp.SetOptions(fixed); err != nil {
		t.Fatal(err)
	}
	tp.waitRunning(t, 2)
}

func TestScaleChangesOnlyTheDifference(t *testing.T) {
	o := testOptions("sleep", 0)
	tp := newPool(t, o)
	if old, err := tp.Scale(2); err != nil || old != 0 {
		t.Fatalf("Scale(2) before Run = %d, %v; want 0, nil", old, err)
	}
	tp.run(t)
	two := tp.waitRunning(t, 2)

	if old, err := tp.Scale(5); err != nil || old != 2 {
		t.Fatalf("Scale(5) = %d, %v; want 2, nil", old, err)
	}
	five := tp.waitRunning(t, 5)
	for i := 1; i <= 2; i++ {
		if five[i].PID != two[i].PID {
			t.Errorf("scaling up restarted slot %d (%d -> %d)", i, two[i].PID, five[i].PID)
		}
	}

	if old, err := tp.Scale(1); err != nil || old != 5 {
		t.Fatalf("Scale(1) = %d, %v; want 5, nil", old, err)
	}
	one := tp.waitRunning(t, 1)
	if one[1].PID != five[1].PID {
		t.Errorf("scaling down restarted slot 1 (%d -> %d)", five[1].PID, one[1].PID)
	}
	for i := 2; i <= 5; i++ {
		if procstat.Alive(five[i].PID) {
			t.Errorf("slot %d's worker %d still runs after scaling down", i, five[i].PID)
		}
		if len(tp.logs.matching(`^Process stopped \(exited with code 0\)$`, i)) != 1 {
			t.Errorf("slot %d: no clean stop logged", i)
		}
	}
	if n := len(tp.logs.matching("and was restarted", 0)); n != 0 {
		t.Errorf("%d workers were restarted while scaling", n)
	}
	if _, err := tp.Scale(-1); err == nil {
		t.Error("Scale(-1) succeeded")
	}
}

// A reload's new size scales the pool, keeping the slots that stay.
func TestSetOptionsScales(t *testing.T) {
	tp := startPool(t, testOptions("sleep", 2))
	two := tp.waitRunning(t, 2)
	if err := tp.SetOptions(testOptions("sleep", 4)); err != nil {
		t.Fatal(err)
	}
	if n := tp.Size(); n != 4 {
		t.Errorf("Size() = %d after SetOptions with size 4", n)
	}
	four := tp.waitRunning(t, 4)
	for i := 1; i <= 2; i++ {
		if four[i].PID != two[i].PID {
			t.Errorf("scaling up by SetOptions restarted slot %d (%d -> %d)", i, two[i].PID, four[i].PID)
		}
	}
	if err := tp.SetOptions(testOptions("sleep", 1)); err != nil {
		t.Fatal(err)
	}
	if one := tp.waitRunning(t, 1); one[1].PID != two[1].PID {
		t.Errorf("scaling down by SetOptions restarted slot 1 (%d -> %d)", two[1].PID, one[1].PID)
	}
}

func TestScaleToZeroStopsEverySlot(t *testing.T) {
	tp := startPool(t, testOptions("sleep", 3))
	tp.waitRunning(t, 3)
	tp.Scale(0)
	poll.Eventually(t, wait, func() bool { return len(tp.Slots()) == 0 }, "every slot is gone")
	stops := tp.logs.matching(`^Process stopped`, 0)
	if len(stops) != 3 {
		t.Fatalf("%d stops logged, want 3", len(stops))
	}
	seen := map[int]bool{}
	for _, e := range stops {
		seen[e.slot] = true
	}
	if len(seen) != 3 {
		t.Errorf("stops logged for slots %v, want 1, 2 and 3", seen)
	}
}

func TestWorkerIgnoringSIGTERMIsKilled(t *testing.T) {
	o := testOptions("ignore-term", 1)
	o.StopTimeout = 300 * time.Millisecond
	tp := startPool(t, o)
	w := tp.waitRunning(t, 1)[1]
	t0 := time.Now()
	tp.Scale(0)
	tp.logs.waitFor(t, 1, `^Process stopped \(killed by signal 9\)$`, 1)
	if d := time.Since(t0); d < o.StopTimeout {
		t.Errorf("SIGKILL came %s after the stop, before the stop timeout %s", d, o.StopTimeout)
	}
	if len(tp.logs.matching(`did not stop within 300ms of SIGTERM; sending SIGKILL`, 1)) != 1 {
		t.Error("no warning about the SIGKILL")
	}
	if procstat.Alive(w.PID) {
		t.Errorf("worker %d still alive", w.PID)
	}
}

// A worker stopped by SIGSTOP reads nothing and never exits by itself:
// after the stop timeout the pool kills it and starts a new one. One
// continued in time is left alone.
func TestStoppedWorkerIsReplaced(t *testing.T) {
	o := testOptions("sleep", 2)
	o.StopTimeout = 400 * time.Millisecond
	tp := startPool(t, o)
	before := tp.waitRunning(t, 2)

	// Slot 1: stopped briefly, then continued; it must survive.
	if err := unix.Kill(before[1].PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, wait, func() bool { return processStopped(before[1].PID) }, "slot 1 is stopped")
	// The stimulus, not synchronisation: stopped for one of the pool's
	// checks (a quarter of the stop timeout), far less than the timeout.
	// Slot 2, stopped after it and killed a whole stop timeout later,
	// shows the pool had time to kill slot 1 too, had it not seen it
	// running again.
	time.Sleep(o.StopTimeout / 4)
	if err := unix.Kill(before[1].PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Slot 2: stopped for good.
	t0 := time.Now()
	if err := unix.Kill(before[2].PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	tp.logs.waitFor(t, 1, `stopped by a signal for over 400ms and reads nothing; sending SIGKILL$`, 2)
	if d := time.Since(t0); d < o.StopTimeout {
		t.Errorf("killed %s after SIGSTOP, before the stop timeout %s", d, o.StopTimeout)
	}
	tp.logs.waitFor(t, 1, `^Process terminated \(killed by signal 9\) and was restarted$`, 2)
	after := tp.waitReplaced(t, before, 2)
	if after[1].PID != before[1].PID {
		t.Errorf("slot 1, stopped for %s only, was replaced", o.StopTimeout/4)
	}
	if n := len(tp.logs.matching(`stopped by a signal`, 1)); n != 0 {
		t.Errorf("slot 1: %d warnings about a stopped worker, want none", n)
	}
}

func TestShutdownLeavesNoProcess(t *testing.T) {
	o := testOptions("fork", 3)
	o.StopTimeout = 300 * time.Millisecond
	tp := startPool(t, o)
	got := tp.waitRunning(t, 3)
	children := tp.logs.waitFor(t, 3, `^child pid=\d+$`, 0)
	tp.stop(t)
	// The leaders exit on SIGTERM; their children ignore it and must be
	// killed with the group.
	tp.checkNothingLeft(t)
	for i := 1; i <= 3; i++ {
		if m := groupMembers(got[i].PID); len(m) != 0 {
			t.Errorf("process group %d still has %v", got[i].PID, m)
		}
	}
	if len(children) != 3 {
		t.Errorf("%d children reported", len(children))
	}
	if n := len(tp.Slots()); n != 0 {
		t.Errorf("%d slots listed after Run returned", n)
	}
}

func TestOutputIsLoggedWithTheSlot(t *testing.T) {
	tp := startPool(t, testOptions("print", 2))
	for slot := 1; slot <= 2; slot++ {
		tp.logs.waitFor(t, 1, `^to stdout$`, slot)
		tp.logs.waitFor(t, 1, `^to stderr$`, slot)
		tp.logs.waitFor(t, 1, `^after the long line$`, slot)
		long := tp.logs.waitFor(t, 1, `^z+ \[line truncated\]$`, slot)
		if len(long[0].msg) > maxOutputLine+len(" [line truncated]") {
			t.Errorf("slot %d: logged %d bytes of a long line, want at most %d", slot, len(long[0].msg), maxOutputLine)
		}
		if len(tp.logs.matching(`END`, slot)) != 0 {
			t.Errorf("slot %d: the rest of the long line was logged", slot)
		}
	}
}

func TestWorkersDieWithTheDaemon(t *testing.T) {
	daemon, pids := startStandInDaemon(t, "pool")
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(pid, syscall.SIGKILL)
		}
	})
	daemon.Process.Kill()
	daemon.Wait()
	for _, pid := range pids {
		poll.Eventually(t, wait, func() bool { return !procstat.Alive(pid) }, fmt.Sprintf("worker %d dies with its daemon", pid))
	}
}

func TestManyWorkersStartQuickly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 200 processes")
	}
	o := testOptions("", 200)
	o.Command = []string{"sleep", "60"}
	tp := startPool(t, o)
	t0 := time.Now()
	poll.Eventually(t, wait, func() bool { return len(tp.running()) == 200 }, "200 workers run")
	t.Logf("200 workers started in %s", time.Since(t0))
	pids := map[int]bool{}
	for _, s := range tp.Slots() {
		pids[s.PID] = true
	}
	tp.stop(t)
	for pid := range pids {
		poll.Eventually(t, wait, func() bool { return !procstat.Alive(pid) }, fmt.Sprintf("worker %d is gone", pid))
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := map[string]func(*Options){
		"negative size":  func(o *Options) { o.Size = -1 },
		"no command":     func(o *Options) { o.Command = nil },
		"bad address":    func(o *Options) { o.Addr = "localhost" },
		"bad env":        func(o *Options) { o.Env = []string{"NOEQUALS"} },
		"zero backoff":   func(o *Options) { o.BackoffInitial = 0 },
		"backoff max":    func(o *Options) { o.BackoffMax = time.Millisecond },
		"zero stop time": func(o *Options) { o.StopTimeout = 0 },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			o := testOptions("sleep", 1)
			mutate(&o)
			if _, err := New(o, nil); err == nil || !strings.Contains(err.Error(), "invalid pool options") {
				t.Errorf("New returned %v, want an options error", err)
			}
		})
	}
}

func TestRunTwice(t *testing.T) {
	tp := startPool(t, testOptions("sleep", 0))
	poll.Eventually(t, wait, func() bool {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		return tp.ran
	}, "Run has started")
	if err := tp.Run(t.Context()); err != ErrRunTwice {
		t.Errorf("second Run returned %v, want ErrRunTwice", err)
	}
}

func TestOutputLevel(t *testing.T) {
	tests := []struct {
		in    string
		level logrus.Level
		rest  string
	}{
		{"[WARNING] keep-alive late", logrus.WarnLevel, "keep-alive late"},
		{"[INFO] Connected to 127.0.0.1:1", logrus.InfoLevel, "Connected to 127.0.0.1:1"},
		{"[ERROR] boom", logrus.ErrorLevel, "boom"},
		{"[DEBUG] x", logrus.DebugLevel, "x"},
		{"plain output", logrus.InfoLevel, "plain output"},
		{"[WARNING]no space", logrus.InfoLevel, "[WARNING]no space"},
	}
	for _, tt := range tests {
		level, rest := outputLevel(tt.in)
		if level != tt.level || rest != tt.rest {
			t.Errorf("outputLevel(%q) = %v, %q; want %v, %q", tt.in, level, rest, tt.level, tt.rest)
		}
	}
}

// Each start of a worker gets its own secret through a pipe, never in its
// arguments or environment, and each secret is released once its process
// is reaped, also after a SIGKILL and at shutdown.
func TestCredentials(t *testing.T) {
	var mu sync.Mutex
	issued, released := map[string]bool{}, map[string]bool{}
	o := testOptions("credentials", 2)
	o.Credentials = func(slot int) ([]byte, func(), error) {
		mu.Lock()
		defer mu.Unlock()
		s := fmt.Sprintf("secret-%d-%d", slot, len(issued))
		issued[s] = true
		return []byte(s), func() {
			mu.Lock()
			defer mu.Unlock()
			if released[s] {
				t.Errorf("%s released twice", s)
			}
			released[s] = true
		}, nil
	}
	tp := startPool(t, o)
	before := tp.waitRunning(t, 2)
	for slot := 1; slot <= 2; slot++ {
		tp.logs.waitFor(t, 1, `^secret=secret-`+strconv.Itoa(slot)+`-\d+$`, slot)
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", before[slot].PID))
		if err != nil {
			t.Fatal(err)
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", before[slot].PID))
		if bytes.Contains(env, []byte("secret-")) || bytes.Contains(cmdline, []byte("secret-")) {
			t.Errorf("slot %d: the secret is in the environment or arguments", slot)
		}
	}
	if err := unix.Kill(before[1].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tp.logs.waitFor(t, 2, `^secret=secret-1-\d+$`, 1)
	poll.Eventually(t, wait, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(released) == 1
	}, "the killed worker's secret released")
	tp.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if len(issued) != 3 || len(released) != 3 {
		t.Fatalf("issued %v, released %v; want 3 of each", issued, released)
	}
	seen := map[string]bool{}
	for _, e := range tp.logs.matching(`^secret=`, 0) {
		seen[e.msg] = true
	}
	if len(seen) != 3 {
		t.Errorf("workers read %d different secrets, want 3: %v", len(seen), seen)
	}
}
