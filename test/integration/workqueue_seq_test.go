package integration

import (
	"bytes"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/test/harness"
)

// The work queue on both listeners: workers of the text listener and of
// the sequenced listener take lines from one queue, the sequenced ones as
// "<seq> <line>" acknowledged by ACK <seq>, one line at a time.

// seqQueueConfig is queueConfig with the sequenced listener on a free
// port.
func seqQueueConfig(size int, bin string, args []string, broadcast string) string {
	return queueConfig(size, bin, args, "  sequenced:\n    listen: 127.0.0.1:0\n"+broadcast)
}

// runQueueWorker runs testdata/queueworker with args against addr until the
// test ends, and returns its process.
func runQueueWorker(t *testing.T, bin, addr string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append(args, addr)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if stderr.Len() > 0 {
			t.Logf("queueworker %d: %s", cmd.Process.Pid, stderr.String())
		}
	})
	return cmd
}

// byListener counts the queue's workers on each listener.
func byListener(q *control.QueueStatus) map[string]int {
	out := map[string]int{}
	for _, w := range q.Workers {
		out[w.Listener]++
	}
	return out
}

// 5,000 lines to 4 text workers (the pool's) and 4 sequenced workers:
// each line handled and acknowledged exactly once, both kinds take a
// share, and status, chattyctl status and /metrics say which listener
// each worker is on.
func TestQueueBothListenersEachLineOnce(t *testing.T) {
	t.Parallel()
	const perKind, n = 4, 5000
	bin, rec := buildQueueWorker(t), t.TempDir()
	d := harness.StartDaemon(t, harness.Options{Config: seqQueueConfig(perKind, bin, []string{"-record", rec}, "")})
	cl := client.New(d.ControlSocket())
	seqAddr := d.Addrs().Sequenced
	if seqAddr == "" {
		t.Fatal("status lists no sequenced listener")
	}
	for range perKind {
		runQueueWorker(t, bin, seqAddr, "-sequenced", "-record", rec)
	}
	waitQueue(t, cl, long, "4 workers on each listener", func(q *control.QueueStatus) bool {
		k := byListener(q)
		return k[control.ListenerBroadcast] == perKind && k[control.ListenerSequenced] == perKind
	})
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
	acked := map[string]uint64{}
	for _, w := range q.Workers {
		if w.Acked == 0 {
			t.Errorf("worker %d (%s) handled nothing", w.ID, w.Listener)
		}
		acked[w.Listener] += w.Acked
	}
	if acked[control.ListenerBroadcast]+acked[control.ListenerSequenced] != n {
		t.Errorf("acknowledged by listener %v, want %d in all", acked, n)
	}
	t.Logf("%d lines: %d acknowledged on the text listener, %d on the sequenced", n, acked[control.ListenerBroadcast], acked[control.ListenerSequenced])
	for _, l := range st.Listeners {
		if (l.Name == control.ListenerBroadcast || l.Name == control.ListenerSequenced) && l.Clients != perKind {
			t.Errorf("listener %s has %d clients, want %d", l.Name, l.Clients, perKind)
		}
	}
	if st.Clients.Connected != 2*perKind {
		t.Errorf("%d clients connected, want %d", st.Clients.Connected, 2*perKind)
	}
	out := ctlOK(t, d.ControlSocket(), "status")
	if c := strings.Count(out, "on "+control.ListenerSequenced+": "); c != perKind {
		t.Errorf("chattyctl status shows %d workers on %s, want %d:\n%s", c, control.ListenerSequenced, perKind, out)
	}
	resp, body := httpDo(t, d.ControlSocket(), http.MethodGet, "/metrics", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	if c := strings.Count(string(body), `listener="`+control.ListenerSequenced+`"} `); c < perKind {
		t.Errorf("/metrics has %d series of workers on the sequenced listener, want %d:\n%s", c, perKind, body)
	}
}

// A sequenced worker killed while it holds lines: its lines go to the
// other workers, of either listener, and every line is handled once by
// them.
func TestQueueSequencedWorkerKilled(t *testing.T) {
	t.Parallel()
	const n = 100
	bin, rec, victimRec := buildQueueWorker(t), t.TempDir(), t.TempDir()
	d := harness.StartDaemon(t, harness.Options{Config: seqQueueConfig(0, bin, nil, "")})
	cl := client.New(d.ControlSocket())
	addrs := d.Addrs()
	victim := runQueueWorker(t, bin, addrs.Sequenced, "-sequenced", "-never-ack", "-record", victimRec)
	waitQueue(t, cl, short, "the victim", func(q *control.QueueStatus) bool { return len(q.Workers) == 1 })
	d.Feed(jobs(n)...)
	waitQueue(t, cl, short, "the victim holding its window", func(q *control.QueueStatus) bool {
		return len(q.Workers) == 1 && q.Workers[0].InFlight == 64
	})
	runQueueWorker(t, bin, addrs.Sequenced, "-sequenced", "-record", rec)
	runQueueWorker(t, bin, addrs.Text, "-record", rec)
	waitQueue(t, cl, long, "the lines the victim does not hold acknowledged", func(q *control.QueueStatus) bool {
		return q.Acked == n-64 && len(q.Workers) == 3
	})
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := waitQueue(t, cl, long, "every line acknowledged", func(q *control.QueueStatus) bool { return q.Acked == n && q.InFlight == 0 })
	if st.Queue.Redeliveries != 64 {
		t.Errorf("%d redeliveries, want the victim's 64", st.Queue.Redeliveries)
	}
	counts := handled(t, rec)
	for i := 1; i <= n; i++ {
		if counts[i] != 1 {
			t.Fatalf("job %d handled %d times by the workers that stayed, want once", i, counts[i])
		}
	}
	if held := requeued(t, d.Log()); len(held) != 64 || held[1] != 1 || held[64] != 1 {
		t.Errorf("the log says the victim held %v; want lines 1 to 64", held)
	}
}

// A sequenced worker that acknowledges a line with a number it was never
// sent: the ack is counted as mismatched and completes nothing; the line
// stays held and, after ack_timeout, goes to another worker.
func TestQueueSequencedMismatchedAck(t *testing.T) {
	t.Parallel()
	const n = 10
	bin, rec := buildQueueWorker(t), t.TempDir()
	d := harness.StartDaemon(t, harness.Options{Config: seqQueueConfig(0, bin, nil, "  work_queue:\n    ack_timeout: 500ms\n")})
	cl := client.New(d.ControlSocket())
	addr := d.Addrs().Sequenced
	runQueueWorker(t, bin, addr, "-sequenced", "-record", rec, "-bad-ack-on", "job 00000005")
	waitQueue(t, cl, short, "the worker", func(q *control.QueueStatus) bool { return len(q.Workers) == 1 })
	d.Feed(jobs(n)...)
	st := waitQueue(t, cl, short, "one mismatched ack", func(q *control.QueueStatus) bool { return q.Mismatched == 1 && q.Acked == n-1 })
	if st.Queue.InFlight != 1 && st.Queue.AckTimeouts == 0 {
		t.Errorf("in flight %d after the mismatched ack, want line 5 still held", st.Queue.InFlight)
	}
	runQueueWorker(t, bin, addr, "-sequenced", "-record", rec)
	st = waitQueue(t, cl, long, "every line acknowledged", func(q *control.QueueStatus) bool { return q.Acked == n && q.InFlight == 0 })
	if st.Queue.Redeliveries != 1 || st.Queue.AckTimeouts != 1 || st.Queue.Mismatched != 1 {
		t.Errorf("redeliveries %d, ack timeouts %d, mismatched %d; want 1, 1 and 1", st.Queue.Redeliveries, st.Queue.AckTimeouts, st.Queue.Mismatched)
	}
	counts := handled(t, rec)
	for i := 1; i <= n; i++ {
		if want := map[bool]int{true: 2, false: 1}[i == 5]; counts[i] != want {
			t.Errorf("job %d handled %d times, want %d", i, counts[i], want)
		}
	}
	d.WaitLog(t, "Worker acknowledged line 1000005, which it does not hold", short)
	d.WaitLog(t, "Worker held line 5 unacknowledged for over 500ms; 1 lines go to other workers", short)
}
