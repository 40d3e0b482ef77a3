package natscluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/test/harness"
)

// The work queue across machines runs chattyd with broadcast.delivery:
// one and a nats section, and pool workers of the original's kind
// (test/integration/testdata/queueworker), which write down every line
// they handle before they acknowledge it.

// buildQueueWorker builds the integration tests' queueworker.
func buildQueueWorker(t *testing.T) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "queueworker")
	cmd := exec.Command("go", "build", "-o", bin, "./test/integration/testdata/queueworker")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build queueworker: %v\n%s", err, out)
	}
	return bin
}

// workEdgeConfig is a chattyd of the work queue across machines with
// workers workers of bin writing down what they handle in rec, and
// taking ackDelay over each read of lines before they acknowledge it.
func workEdgeConfig(c *Cluster, workers int, bin, rec string, ackDelay time.Duration) string {
	return fmt.Sprintf(`version: 1
broadcast:
  delivery: one
  drain_timeout: 2s
  work_queue:
    max_in_flight: 16
    ack_timeout: 10s
pool:
  size: %d
  command: [%q, "-record", %q, "-ack-delay", %q, "{addr}"]
  min_uptime: 100ms
  backoff_initial: 10ms
  backoff_max: 50ms
  stop_timeout: 2s
nats:
  urls: [%s]
  stream:
    name: FEED
    subjects: [chatty.feed]
    replicas: 3
  publish:
    ack_timeout: 2s
  work_queue:
    stream: WORK
    subject: chatty.work
    consumer: workers
    ack_wait: 2s
`, workers, bin, rec, ackDelay.String(), c.URLs())
}

// workJob is line i of the feed, of lengths varied so that a misplaced
// ack mismatches.
func workJob(i int) string { return fmt.Sprintf("job %08d %s", i, strings.Repeat("x", i%23)) }

// workHandled reads the records in dir: how many times each job was
// handled, and the pids of the workers that wrote them.
func workHandled(t *testing.T, dir string) (map[int]int, []int) {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int]int{}
	var pids []int
	for _, f := range files {
		pid, err := strconv.Atoi(f.Name())
		if err != nil {
			t.Fatalf("worker record %s is not named by a pid", f.Name())
		}
		pids = append(pids, pid)
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
	return counts, pids
}

func queueOf(t *testing.T, e *edge) *control.QueueStatus {
	t.Helper()
	st := e.status(t)
	if st.Queue == nil || st.NATS == nil || st.NATS.WorkQueue == nil {
		t.Fatalf("%s: status without a work queue across machines: %+v", e.name, st)
	}
	return st.Queue
}

// Two edges with workers share the work-queue stream; one is SIGKILLed
// mid-feed. Every line is handled at least once; a line handled twice
// was handled by the dead edge's workers, which died with it; nothing is
// lost, and every process of the dead edge is gone.
func TestWorkQueueEdgeKilled(t *testing.T) {
	c := Start(t)
	bin := buildQueueWorker(t)
	rate, seconds := 1000, 6
	if full() {
		rate, seconds = 2000, 20
	}
	n := rate * seconds
	const workers = 4

	recA, recB := t.TempDir(), t.TempDir()
	// Edge B's workers are slow: it is killed while they hold lines they
	// handled and did not acknowledge.
	a := &edge{name: "edge-a", config: workEdgeConfig(c, workers, bin, recA, 20*time.Millisecond)}
	a.start(t)
	b := &edge{name: "edge-b", config: workEdgeConfig(c, workers, bin, recB, 300*time.Millisecond)}
	b.start(t)
	for _, e := range []*edge{a, b} {
		poll.Eventually(t, 60*time.Second, func() bool { return len(queueOf(t, e).Workers) == workers }, e.name+"'s workers connected")
	}

	var fed atomic.Int64
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		w := a.daemon().FeedWriter()
		start := time.Now()
		const chunk = 20
		for i := 1; i <= n; i += chunk {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d) // pacing the producer
			}
			var sb strings.Builder
			for j := i; j < min(i+chunk, n+1); j++ {
				sb.WriteString(workJob(j))
				sb.WriteByte('\n')
			}
			if _, err := w.Write([]byte(sb.String())); err != nil {
				t.Errorf("feed: %v", err)
				return
			}
			fed.Store(int64(min(i+chunk-1, n)))
		}
	}()
	poll.Eventually(t, 60*time.Second, func() bool { return fed.Load() >= int64(n)*2/5 }, "40% of the feed written")
	// Edge B must have taken a share by now, else the kill proves nothing.
	poll.Eventually(t, 30*time.Second, func() bool { return queueOf(t, b).Acked > 0 }, "edge-b's workers acknowledging lines")
	// ... and must hold lines handled, not yet acknowledged, when it dies.
	poll.Eventually(t, 30*time.Second, func() bool {
		acked := queueOf(t, b).Acked
		h, _ := workHandled(t, recB)
		return uint64(len(h)) >= acked+uint64(workers)
	}, "edge-b's workers holding lines they handled")
	t.Logf("SIGKILL edge-b")
	b.daemon().Signal(syscall.SIGKILL)
	b.daemon().Wait(10 * time.Second)
	_, pidsB := workHandled(t, recB)
	// Its workers see their connections end and exit.
	for _, pid := range pidsB {
		poll.Eventually(t, 20*time.Second, func() bool { return !harness.Alive(pid) }, fmt.Sprintf("edge-b's worker %d gone", pid))
	}
	<-feedDone

	poll.Eventually(t, 90*time.Second, func() bool {
		hA, _ := workHandled(t, recA)
		hB, _ := workHandled(t, recB)
		for i := 1; i <= n; i++ {
			if hA[i]+hB[i] == 0 {
				return false
			}
		}
		return true
	}, "every line handled")
	poll.Eventually(t, 30*time.Second, func() bool {
		st := a.status(t)
		return st.Queue.InFlight == 0 && st.Queue.Waiting == 0 && st.NATS.WorkQueue.Held == 0
	}, "edge-a holding nothing")

	hA, _ := workHandled(t, recA)
	hB, _ := workHandled(t, recB)
	dups, onB := 0, 0
	for i := 1; i <= n; i++ {
		switch total := hA[i] + hB[i]; {
		case total == 1:
		case total == 2 && hA[i] == 1 && hB[i] == 1:
			dups++ // handled by a worker of the dead edge, then again
		default:
			t.Errorf("job %d handled %d times at edge-a and %d at edge-b; want once, or once at each for a line the dead edge's workers held", i, hA[i], hB[i])
		}
		if hB[i] > 0 {
			onB++
		}
	}
	for j := range hA {
		if j < 1 || j > n {
			t.Errorf("edge-a's workers handled job %d, not fed", j)
		}
	}
	// The dead edge's workers held at most their windows; and up to 32
	// lines (chattyd's acknowledgements to JetStream in flight, Acks in
	// internal/daemon/nats.go) a worker had acknowledged may not have
	// been acknowledged to JetStream when the edge died.
	if most := workers*16 + 32; dups > most {
		t.Errorf("%d lines handled twice; the dead edge's %d workers could hold at most %d, with the acks in flight", dups, workers, most)
	}
	st := a.status(t)
	wq := st.NATS.WorkQueue
	if wq.AckFailures != 0 || wq.Terminated != 0 || st.Queue.DeadLettered != 0 || st.Queue.Mismatched != 0 {
		t.Errorf("edge-a: %+v, queue %+v: want no failed acks, terminations, dead letters or mismatches", *wq, *st.Queue)
	}
	// The dead edge held lines, which JetStream gave to edge-a: some of
	// them handled already (its workers were slow to acknowledge).
	if wq.Redelivered == 0 || dups == 0 {
		t.Errorf("edge-a got %d lines redelivered, %d handled twice; want some of each from the dead edge", wq.Redelivered, dups)
	}
	conn, _ := connect(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, err := conn.JS.Stream(ctx, "WORK")
	if err != nil {
		t.Fatal(err)
	}
	info, err := ws.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 || info.Config.Replicas != 3 {
		t.Errorf("work-queue stream: %d lines left, %d replicas; want none left, 3", info.State.Msgs, info.Config.Replicas)
	}
	t.Logf("%d lines: %d handled at edge-b before its SIGKILL, %d handled twice; edge-a pulled %d, %d of them redelivered", n, onB, dups, wq.Messages, wq.Redelivered)
}
