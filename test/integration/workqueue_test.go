package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/test/harness"
)

// The work-queue tests run chattyd with broadcast.delivery: one and
// workers of testdata/queueworker, which speak only ACK_RECEIVED and
// KEEP_ALIVE, as the original's do, and write down every line they
// handle before acknowledging it. What they wrote is checked against the
// feed, and against chattyd's log of the lines each lost worker held.

// buildQueueWorker builds testdata/queueworker and returns its path.
func buildQueueWorker(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not in PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "queueworker")
	if out, err := exec.Command(gobin, "build", "-o", bin, "./testdata/queueworker").CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/queueworker: %v\n%s", err, out)
	}
	return bin
}

// queueConfig is a configuration with delivery one, size queue workers
// running bin with args (after the address), and more broadcast keys.
func queueConfig(size int, bin string, args []string, broadcast string) string {
	cmd := []string{strconv.Quote(bin)}
	for _, a := range args {
		cmd = append(cmd, strconv.Quote(a))
	}
	cmd = append(cmd, `"{addr}"`)
	return fmt.Sprintf("version: 1\nbroadcast:\n  delivery: one\n%spool:\n  size: %d\n  command: [%s]\n  min_uptime: 100ms\n  backoff_initial: 10ms\n  backoff_max: 50ms\n  stop_timeout: 2s\n",
		broadcast, size, strings.Join(cmd, ", "))
}

// jobs returns n feed lines "job 00000001 ...", numbered from 1 as the
// queue numbers them, of lengths varied so that a misplaced ack mismatches.
func jobs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("job %08d %s", i+1, strings.Repeat("x", i%23))
	}
	return out
}

// handled reads what the workers wrote down in dir: how many times each
// job number was handled.
func handled(t *testing.T, dir string) map[int]int {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int]int{}
	for _, f := range files {
		fh, err := os.Open(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var n int
			if _, err := fmt.Sscanf(sc.Text(), "job %d", &n); err != nil {
				t.Fatalf("worker record %s: %q: %v", f.Name(), sc.Text(), err)
			}
			counts[n]++
		}
		fh.Close()
	}
	return counts
}

func queueStatus(t *testing.T, cl *client.Client) control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.Queue == nil {
		t.Fatal("status has no work queue with broadcast.delivery: one")
	}
	return st
}

// waitQueue polls the status until ok accepts it.
func waitQueue(t *testing.T, cl *client.Client, timeout time.Duration, what string, ok func(*control.QueueStatus) bool) control.Status {
	t.Helper()
	var st control.Status
	err := poll.Until(context.Background(), timeout, func() bool {
		st = queueStatus(t, cl)
		return ok(st.Queue)
	})
	if err != nil {
		t.Fatalf("after %s the work queue still does not show %s: %+v", timeout, what, *st.Queue)
	}
	return st
}

// requeuedRE finds the lines a lost worker held, in chattyd's log.
var requeuedRE = regexp.MustCompile(`Connection closed .*requeued="?([0-9,-]+)"?`)

// requeued counts, from chattyd's log, how many times each sequence
// number was held by a worker that was lost.
func requeued(t *testing.T, log string) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, m := range requeuedRE.FindAllStringSubmatch(log, -1) {
		for r := range strings.SplitSeq(m[1], ",") {
			from, to, isRange := strings.Cut(r, "-")
			a, err := strconv.Atoi(from)
			b := a
			if err == nil && isRange {
				b, err = strconv.Atoi(to)
			}
			if err != nil {
				t.Fatalf("log: bad requeued range %q", r)
			}
			for s := a; s <= b; s++ {
				out[s]++
			}
		}
	}
	return out
}

// 10,000 lines to 8 workers that never die: each handled exactly once,
// and every worker takes a share.
func TestQueueEachLineOnce(t *testing.T) {
	t.Parallel()
	const workers, n = 8, 10000
	bin, rec := buildQueueWorker(t), t.TempDir()
	d := harness.StartDaemon(t, harness.Options{Config: queueConfig(workers, bin, []string{"-record", rec}, "")})
	cl := client.New(d.ControlSocket())
	waitQueue(t, cl, long, "8 workers", func(q *control.QueueStatus) bool { return len(q.Workers) == workers })
	d.Feed(jobs(n)...)
	st := waitQueue(t, cl, long, "every line acknowledged", func(q *control.QueueStatus) bool { return q.Acked == n })
	q := st.Queue
	if q.Waiting != 0 || q.InFlight != 0 || q.Redeliveries != 0 || q.Mismatched != 0 || q.DeadLettered != 0 {
		t.Errorf("queue %+v: want nothing waiting, in flight, redelivered, mismatched or set aside", *q)
	}
	counts := handled(t, rec)
	for i := 1; i <= n; i++ {
		if counts[i] != 1 {
			t.Fatalf("job %d handled %d times, want once", i, counts[i])
		}
	}
	var split []string
	total := uint64(0)
	for _, w := range q.Workers {
		if w.Acked == 0 {
			t.Errorf("worker %d handled nothing", w.ID)
		}
		total += w.Acked
		split = append(split, strconv.FormatUint(w.Acked, 10))
	}
	if total != n {
		t.Errorf("the workers acknowledged %d lines in all, want %d", total, n)
	}
	t.Logf("split of %d lines between %d workers: %s", n, workers, strings.Join(split, " "))
}

// Workers living 0.5-2 s while 2,000 lines a second flow: every line is
// handled at least once, and a line handled twice was held by a worker
// when it was lost, as many times as it was handled again.
func TestQueueChurn(t *testing.T) {
	t.Parallel()
	duration := 30 * time.Second
	if testing.Short() {
		duration = 5 * time.Second
	}
	const workers, rate = 8, 2000
	bin, rec := buildQueueWorker(t), t.TempDir()
	d := harness.StartDaemon(t, harness.Options{
		Config: queueConfig(workers, bin, []string{"-record", rec, "-life-min", "500ms", "-life-max", "2s"}, ""),
	})
	cl := client.New(d.ControlSocket())
	waitQueue(t, cl, long, "workers", func(q *control.QueueStatus) bool { return len(q.Workers) > 0 })
	n := int(duration.Seconds()) * rate
	all := jobs(n)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for fed := 0; fed < n; {
		<-tick.C
		due := min(n, int(time.Since(start).Seconds()*rate)+1)
		if due > fed {
			d.Feed(all[fed:due]...)
			fed = due
		}
	}
	st := waitQueue(t, cl, long, "every line acknowledged", func(q *control.QueueStatus) bool {
		return q.Waiting == 0 && q.InFlight == 0 && q.Queued == uint64(n)
	})
	restarts := st.Pool.Restarts
	counts, held := handled(t, rec), requeued(t, d.Log())
	dups := 0
	for i := 1; i <= n; i++ {
		if counts[i] == 0 {
			t.Fatalf("job %d was never handled", i)
		}
		if again := counts[i] - 1; again > held[i] {
			t.Fatalf("job %d handled %d times, but lost workers held it only %d times", i, counts[i], held[i])
		}
		dups += counts[i] - 1
	}
	if restarts < 10 {
		t.Errorf("only %d worker restarts: the workers did not churn", restarts)
	}
	if st.Queue.DeadLettered != 0 {
		t.Errorf("%d lines set aside as poison; none kills a worker", st.Queue.DeadLettered)
	}
	t.Logf("%d lines in %s, %d worker restarts, %d redeliveries, %d lines handled twice or more (duplicates %d)",
		n, duration, restarts, st.Queue.Redeliveries, countOver(counts, 1), dups)
}

func countOver(m map[int]int, k int) int {
	c := 0
	for _, v := range m {
		if v > k {
			c++
		}
	}
	return c
}

// A worker that never acknowledges: after ack_timeout it is disconnected
// and its lines go to a worker that does.
func TestQueueWorkerThatNeverAcks(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: "version: 1\nbroadcast:\n  delivery: one\n  work_queue:\n    ack_timeout: 500ms\npool:\n  size: 0\n"})
	cl := client.New(d.ControlSocket())
	silent := harness.Dial(t, d.Addr())
	waitQueue(t, cl, short, "the silent worker", func(q *control.QueueStatus) bool { return len(q.Workers) == 1 })
	lines := jobs(10)
	sent := time.Now() // before chattyd can hand a line out, so never late
	d.Feed(lines...)
	for i, want := range lines {
		if got := silent.ReadLine(short); got != want {
			t.Fatalf("silent worker, line %d: %q, want %q", i+1, got, want)
		}
	}
	good := harness.Dial(t, d.Addr())
	for i, want := range lines {
		got := good.ReadLine(short)
		if got != want {
			t.Fatalf("good worker, line %d: %q, want %q", i+1, got, want)
		}
		good.Send(fmt.Sprintf("ACK_RECEIVED %d", len(got)))
	}
	if moved := time.Since(sent); moved < 500*time.Millisecond {
		t.Errorf("the lines moved %s after they were sent, before ack_timeout (500ms)", moved)
	}
	silent.ExpectClosed(short)
	st := waitQueue(t, cl, short, "10 acks", func(q *control.QueueStatus) bool { return q.Acked == 10 })
	if st.Queue.AckTimeouts != 1 || st.Queue.Redeliveries != 10 {
		t.Errorf("ack timeouts %d, redeliveries %d; want 1 and 10", st.Queue.AckTimeouts, st.Queue.Redeliveries)
	}
	d.WaitLog(t, "Worker held line 1 unacknowledged for over 500ms; 10 lines go to other workers", short)
}

// A line that kills every worker that receives it is set aside after
// max_deliveries, the others flow, and chattyctl retry queues it again.
func TestQueuePoisonLine(t *testing.T) {
	t.Parallel()
	bin, rec := buildQueueWorker(t), t.TempDir()
	d := harness.StartDaemon(t, harness.Options{
		Config: queueConfig(3, bin, []string{"-record", rec, "-die-on", "POISON"}, "  work_queue:\n    max_deliveries: 3\n"),
	})
	cl := client.New(d.ControlSocket())
	waitQueue(t, cl, long, "3 workers", func(q *control.QueueStatus) bool { return len(q.Workers) == 3 })
	lines := jobs(200)
	lines[49] = "job 00000050 POISON"
	d.Feed(lines...)
	waitQueue(t, cl, long, "199 lines acknowledged and one set aside", func(q *control.QueueStatus) bool {
		return q.Acked == 199 && q.DeadLetters == 1
	})
	counts := handled(t, rec)
	for i := 1; i <= 200; i++ {
		if want := 1; i != 50 && counts[i] < want {
			t.Fatalf("job %d never handled", i)
		}
	}
	if counts[50] != 0 {
		t.Fatal("the poison line was recorded as handled")
	}
	if got := d.CountLog("Poison line 50 set aside after 3 deliveries without an ack"); got != 1 {
		t.Errorf("the poison line was logged %d times, want once", got)
	}
	out := ctlOK(t, d.ControlSocket(), "deadletters")
	if !strings.Contains(out, "50") || !strings.Contains(out, "POISON") {
		t.Fatalf("chattyctl deadletters:\n%s", out)
	}
	if r := ctl(t, d.ControlSocket(), "retry", "49"); r.code == 0 || !strings.Contains(r.stderr, "no dead letter has sequence number 49") {
		t.Errorf("chattyctl retry 49 (no such dead letter): %s", r)
	}
	ctlOK(t, d.ControlSocket(), "retry", "50")
	// Queued again, it kills its workers again and is set aside again.
	waitQueue(t, cl, long, "the line set aside again", func(q *control.QueueStatus) bool { return q.DeadLettered == 2 && q.DeadLetters == 1 })
	if got := d.CountLog("Poison line 50 set aside"); got != 2 {
		t.Errorf("after retry the poison line was logged %d times, want twice", got)
	}
}

// With no worker connected the queue fills, the feed is no longer read
// (its writer blocks), nothing is dropped, and a worker that comes gets
// every line in order; chattyctl send queues its line too. Stopping with
// lines queued says how many.
func TestQueueHoldsFeedWithoutWorkers(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: "version: 1\nbroadcast:\n  delivery: one\n  queue_lines: 100\n  drain_timeout: 300ms\npool:\n  size: 0\n"})
	cl := client.New(d.ControlSocket())
	// More than a pipe holds: the writer must block.
	lines := jobs(20000)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		w := d.FeedWriter()
		for _, l := range lines {
			if _, err := fmt.Fprintln(w, l); err != nil {
				return
			}
		}
	}()
	waitQueue(t, cl, short, "the feed held back with 100 lines waiting", func(q *control.QueueStatus) bool { return q.FeedHeld && q.Waiting == 100 })
	if r := ctl(t, d.ControlSocket(), "send", "info", "while full"); r.code == 0 || !strings.Contains(r.stderr, "work queue is full") {
		t.Errorf("chattyctl send with the queue full: %s", r)
	}
	select {
	case <-fed:
		t.Fatal("the feed's writer was never held back")
	case <-time.After(200 * time.Millisecond):
	}
	st := queueStatus(t, cl)
	if st.Queue.OldestWaitingSeconds <= 0 {
		t.Errorf("oldest waiting line's age %v, want more than 0", st.Queue.OldestWaitingSeconds)
	}
	w := harness.Dial(t, d.Addr())
	for i, want := range lines {
		got := w.ReadLine(long)
		if got != want {
			t.Fatalf("line %d: %q, want %q", i+1, got, want)
		}
		w.Send(fmt.Sprintf("ACK_RECEIVED %d", len(got)))
	}
	<-fed
	sent := ctlOK(t, d.ControlSocket(), "send", "info", "queued like a line")
	if got := w.ReadLine(short); got != strings.TrimSpace(sent) {
		t.Errorf("the message sent arrived as %q, want %q", got, strings.TrimSpace(sent))
	}
	// Unacknowledged, with 5 lines more queued: stopping reports them.
	d.Feed("a", "b", "c", "d", "e")
	waitQueue(t, cl, short, "5 lines more", func(q *control.QueueStatus) bool { return q.Queued == 20006 && q.InFlight == 6 })
	w.Close()
	waitQueue(t, cl, short, "the lines back in the queue", func(q *control.QueueStatus) bool { return q.Waiting == 6 })
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(long); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if !strings.Contains(d.Log(), "6 lines still queued and 0 in flight") {
		t.Error("the stop does not report the 6 lines still queued")
	}
}
