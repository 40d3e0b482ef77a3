package pool

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/procstat"
	"github.com/sirupsen/logrus"

	"github.com/chatty-dev/chatty/internal/logging"
)

// helperEnv makes the test binary act as a worker; its value is the mode.
const helperEnv = "CHATTY_POOL_TEST_HELPER"

func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == guardHelperArg {
		os.Exit(guardHelper())
	}
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

// helper is a worker for the tests. Every mode that lives prints
// "ready pid=P slot=S args=A" once it is set up.
func helper(mode string) int {
	ready := func() {
		fmt.Printf("ready pid=%d slot=%s addr=%s args=%s\n",
			os.Getpid(), os.Getenv("CHATTY_SLOT"), os.Getenv("CHATTY_ADDR"), strings.Join(os.Args[1:], ","))
	}
	untilTerm := func() int {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		ready()
		<-c
		return 0
	}
	switch mode {
	case "sleep":
		return untilTerm()
	case "credentials":
		fd, err := strconv.Atoi(os.Getenv(CredentialsFDEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, "no credentials fd:", err)
			return 1
		}
		secret, err := io.ReadAll(os.NewFile(uintptr(fd), "credentials"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "read credentials:", err)
			return 1
		}
		fmt.Printf("secret=%s\n", secret)
		return untilTerm()
	case "exit3":
		return 3
	case "first-line":
		// A respawning worker for BenchmarkSlotIdentification: says how
		// long its first line took from its connect, holds on for a
		// random 1-3 s and exits 2, as the original child (faster).
		c, err := net.Dial("tcp", os.Getenv("CHATTY_ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			return 1
		}
		connected := time.Now()
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			fmt.Fprintln(os.Stderr, "read:", err)
			return 1
		}
		fmt.Printf("first-line after=%d\n", time.Since(connected).Nanoseconds())
		time.Sleep(time.Second + time.Duration(rand.Int64N(int64(2*time.Second))))
		c.Close()
		return 2
	case "dial":
		// A worker: connects to its address and holds the connection.
		c, err := net.Dial("tcp", os.Getenv("CHATTY_ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			return 1
		}
		defer c.Close()
		return untilTerm()
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		ready()
		for {
			time.Sleep(time.Hour)
		}
	case "fork":
		// A child in the worker's process group that ignores SIGTERM.
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=ignore-term")
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "fork:", err)
			return 1
		}
		fmt.Printf("child pid=%d\n", cmd.Process.Pid)
		return untilTerm()
	case "pool", "pool-guarded":
		// A chattyd stand-in: runs a pool of sleeps and reports their PIDs;
		// guarded, each sleep has a child in its group and a guard runs.
		o := Options{
			Size: 3, Command: []string{"sleep", "60"}, Addr: "127.0.0.1:1",
			BackoffInitial: time.Second, BackoffMax: time.Second, StopTimeout: time.Second,
		}
		if mode == "pool-guarded" {
			o.Command = []string{"sh", "-c", "sleep 60 & exec sleep 61"}
			o.Guard = []string{os.Args[0], guardHelperArg}
		}
		p, err := New(o, logging.Discard())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			for {
				var pids []string
				for _, s := range p.Slots() {
					if s.PID > 0 {
						pids = append(pids, strconv.Itoa(s.PID))
					}
				}
				if len(pids) == 3 {
					fmt.Println("workers " + strings.Join(pids, " "))
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		p.Run(context.Background())
		return 0
	case "print":
		fmt.Println("to stdout")
		fmt.Fprintln(os.Stderr, "to stderr")
		fmt.Fprintln(os.Stderr, strings.Repeat("z", 3*maxOutputLine)+"END")
		fmt.Fprintln(os.Stderr, "after the long line")
		return untilTerm()
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 1
}

// wait bounds every wait in these tests.
const wait = 10 * time.Second

// entry is one captured log entry.
type entry struct {
	time  time.Time
	level logrus.Level
	msg   string
	slot  int // the process field, 0 if none
}

// logSink captures log entries.
type logSink struct {
	mu      sync.Mutex // guards entries
	entries []entry
}

func (s *logSink) Levels() []logrus.Level { return logrus.AllLevels }

func (s *logSink) Fire(e *logrus.Entry) error {
	slot, _ := e.Data["process"].(int)
	s.mu.Lock()
	s.entries = append(s.entries, entry{time: e.Time, level: e.Level, msg: e.Message, slot: slot})
	s.mu.Unlock()
	return nil
}

// matching returns the entries whose message matches re, for slot (0: any).
func (s *logSink) matching(re string, slot int) []entry {
	rx := regexp.MustCompile(re)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	for _, e := range s.entries {
		if rx.MatchString(e.msg) && (slot == 0 || e.slot == slot) {
			out = append(out, e)
		}
	}
	return out
}

// waitFor waits until n entries match re for slot, and returns them.
func (s *logSink) waitFor(t *testing.T, n int, re string, slot int) []entry {
	t.Helper()
	var got []entry
	poll.Eventually(t, wait, func() bool {
		got = s.matching(re, slot)
		return len(got) >= n
	}, fmt.Sprintf("%d log lines match %q (slot %d)", n, re, slot))
	return got
}

// testPool is a running pool under test with what it logged.
type testPool struct {
	*Pool
	logs   *logSink
	cancel func()
	result chan error
}

// testOptions returns fast options running the test binary in mode.
func testOptions(mode string, size int) Options {
	return Options{
		Size:    size,
		Command: []string{os.Args[0], "{slot}", "{addr}", "{host}:{port}"},
		// The race detector's 1s pause at exit would slow every stop.
		Env:            []string{helperEnv + "=" + mode, "GORACE=atexit_sleep_ms=0"},
		Addr:           "127.0.0.1:54321",
		MinUptime:      time.Second,
		BackoffInitial: 50 * time.Millisecond,
		BackoffMax:     400 * time.Millisecond,
		StopTimeout:    2 * time.Second,
	}
}

// startPool runs a pool with o; the test's cleanup stops it, and checks
// that it returned nil and left none of the processes it reported behind.
func startPool(t *testing.T, o Options) *testPool {
	t.Helper()
	tp := newPool(t, o)
	tp.run(t)
	return tp
}

func newPool(t *testing.T, o Options) *testPool {
	t.Helper()
	sink := &logSink{}
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(os.Stderr)
	}
	l.SetLevel(logrus.DebugLevel)
	l.SetFormatter(&logging.TextFormatter{})
	l.AddHook(sink)
	p, err := New(o, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	return &testPool{Pool: p, logs: sink, result: make(chan error, 1)}
}

func (tp *testPool) run(t *testing.T) {
	t.Helper()
	goroutines := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	tp.cancel = cancel
	done := make(chan struct{})
	go func() {
		defer close(done)
		tp.result <- tp.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(wait):
			t.Errorf("Run did not return after cancel")
			return
		}
		tp.checkNothingLeft(t)
		poll.Eventually(t, wait, func() bool {
			return runtime.NumGoroutine() <= goroutines
		}, "the pool's goroutines have ended")
	})
}

// stop cancels the pool and waits until Run returns nil.
func (tp *testPool) stop(t *testing.T) {
	t.Helper()
	tp.cancel()
	select {
	case err := <-tp.result:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
	}
}

var pidRE = regexp.MustCompile(`(?:ready|child) pid=(\d+)`)

// pids returns every PID the helpers reported.
func (tp *testPool) pids() []int {
	var out []int
	for _, e := range tp.logs.matching(pidRE.String(), 0) {
		n, _ := strconv.Atoi(pidRE.FindStringSubmatch(e.msg)[1])
		out = append(out, n)
	}
	return out
}

// checkNothingLeft checks that no process the helpers reported lives on,
// nor any process in their groups.
func (tp *testPool) checkNothingLeft(t *testing.T) {
	t.Helper()
	for _, pid := range tp.pids() {
		poll.Eventually(t, wait, func() bool {
			return !procstat.Alive(pid) && len(groupMembers(pid)) == 0
		}, fmt.Sprintf("process %d and its group are gone", pid))
	}
}

// running returns the slots running a process, by slot number.
func (tp *testPool) running() map[int]SlotStatus {
	out := make(map[int]SlotStatus)
	for _, s := range tp.Slots() {
		if s.State == StateRunning && s.PID > 0 {
			out[s.Slot] = s
		}
	}
	return out
}

// waitRunning waits until exactly the slots 1..n run and the helpers in
// them reported ready, and returns their statuses.
func (tp *testPool) waitRunning(t *testing.T, n int) map[int]SlotStatus {
	t.Helper()
	var got map[int]SlotStatus
	poll.Eventually(t, wait, func() bool {
		if len(tp.Slots()) != n {
			return false
		}
		got = tp.running()
		if len(got) != n {
			return false
		}
		for i := 1; i <= n; i++ {
			s, ok := got[i]
			if !ok || len(tp.logs.matching(fmt.Sprintf(`^ready pid=%d `, s.PID), i)) == 0 {
				return false
			}
		}
		return true
	}, fmt.Sprintf("slots 1..%d run and are ready", n))
	return got
}

// waitReplaced polls until slot runs a worker other than the one in before,
// and returns the running slots then.
func (tp *testPool) waitReplaced(t *testing.T, before map[int]SlotStatus, slot int) map[int]SlotStatus {
	t.Helper()
	var after map[int]SlotStatus
	poll.Eventually(t, wait, func() bool {
		after = tp.running()
		return after[slot].PID != 0 && after[slot].PID != before[slot].PID
	}, fmt.Sprintf("slot %d runs a new worker", slot))
	return after
}

// groupMembers returns the live processes in process group pgid.
func groupMembers(pgid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, f := range stats {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if s, err := procstat.Read(pid); err == nil && !s.Zombie() && s.PGID == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// startStandInDaemon starts the test binary as a daemon running a pool of
// three workers in mode ("pool" or "pool-guarded") and returns it with the
// workers' PIDs, which it reports on its standard output. The daemon is
// killed when the test ends; the workers are the caller's to clean up.
func startStandInDaemon(t *testing.T, mode string) (*exec.Cmd, []int) {
	t.Helper()
	daemon := exec.Command(os.Args[0])
	daemon.Env = append(os.Environ(), helperEnv+"="+mode, "GORACE=atexit_sleep_ms=0")
	out, err := daemon.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	readerDone := make(chan struct{})
	go func() { // ends when the daemon dies and the pipe closes
		defer close(readerDone)
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
	}()
	t.Cleanup(func() {
		daemon.Process.Kill()
		daemon.Wait()
		<-readerDone
	})
	var line string
	select {
	case line = <-lines:
	case <-time.After(wait):
		t.Fatal("the daemon did not report its workers")
	}
	var pids []int
	for _, f := range strings.Fields(strings.TrimPrefix(line, "workers ")) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("daemon said %q", line)
		}
		pids = append(pids, pid)
	}
	if len(pids) != 3 {
		t.Fatalf("daemon said %q, want 3 PIDs", line)
	}
	return daemon, pids
}
