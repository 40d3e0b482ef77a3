package integration

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/test/harness"
)

// A proxy between chattyd's signed listener and a real `chattyd worker
// --signed` drops, swaps, replays or flips one message frame, in both
// signing modes. Every time the worker rejects the stream at that frame,
// logs the reason by its pkg/signed name with what it verified and
// discarded, exits with code 2, and never acknowledges the tampered
// message nor any after it: the ACKs the proxy saw, and the acks chattyd
// counted, cover the messages before it only.
//
// chattyd checkpoints the chained stream after exactly the messages fed
// before the tampering (checkpoint_every) and never on a timer
// (checkpoint_interval: 1h), so the reason does not depend on where a
// checkpoint happens to fall.
func TestSignedWorkerDetectsTampering(t *testing.T) {
	t.Parallel()
	const before, after = 19, 10 // messages fed before the tampered one, and from it on
	const replayAfter = 2
	cases := []struct {
		name   string
		tamper harness.Tamper
		// lastGood is the last message the worker may verify.
		lastGood uint64
		// reason is the worker's by mode.
		reason map[string]string
	}{
		{"drop", harness.Drop, before, map[string]string{"per-message": "gap", "chained": "bad_chain"}},
		{"swap", harness.Swap, before, map[string]string{"per-message": "gap", "chained": "bad_chain"}},
		{"replay", harness.Replay, before + 1 + replayAfter, map[string]string{"per-message": "replay", "chained": "bad_chain"}},
		{"flip", harness.Flip, before, map[string]string{"per-message": "bad_digest", "chained": "bad_chain"}},
	}
	for _, mode := range []string{"per-message", "chained"} {
		for _, tc := range cases {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				d, addr, _, pubFile := startSignedDaemon(t, mode,
					fmt.Sprintf("    checkpoint_every: %d\n    checkpoint_interval: 1h\n", before))
				p := harness.StartSignedProxy(t, addr, harness.ProxyOptions{Tamper: tc.tamper, Nth: before + 1, ReplayAfter: replayAfter})
				w := startWorker(t, "--addr", p.Addr(), "--signed", "--pubkey", pubFile,
					"--lifetime-min", "1h", "--lifetime-max", "1h", "--keepalive-min", "1h", "--keepalive-max", "1h")
				statusUntil(t, d, "the worker connected", func(st control.Status) bool { return st.Clients.Connected == 1 })

				d.Feed(numbered("tamper", 1, before, 60)...)
				poll.Eventually(t, short, func() bool {
					acks := p.Acks()
					return len(acks) > 0 && acks[len(acks)-1] == before
				}, fmt.Sprintf("the worker did not acknowledge the first %d messages", before))
				d.Feed(numbered("tamper", before+1, after, 60)...)

				code, log := w.wait(t, short)
				if code != 2 {
					t.Errorf("worker exit status %d, want 2; its log:\n%s", code, log)
				}
				verified, discarded := tc.lastGood, uint64(0)
				if mode == "chained" {
					verified, discarded = before, tc.lastGood-before // held for a checkpoint that never came
				}
				for _, want := range []string{
					"Exiting: the server's signed stream failed verification",
					" reason=" + tc.reason[mode],
					fmt.Sprintf(" verified=%d", verified),
					fmt.Sprintf(" discarded=%d", discarded),
				} {
					if !strings.Contains(log, want) {
						t.Errorf("the worker's log lacks %q:\n%s", want, log)
					}
				}

				p.WaitClosed(short)
				if seq, ok := p.Tampered(); !ok || seq != before+1 {
					t.Fatalf("the proxy tampered with seq %d (%v), want %d", seq, ok, before+1)
				}
				acks := p.Acks()
				if err := ackedInOrder(acks, before, tc.lastGood); err != "" {
					t.Errorf("the worker's ACKs %v: %s", acks, err)
				}
				st := statusUntil(t, d, "the worker's acks counted and the worker gone", func(st control.Status) bool {
					return st.Clients.Connected == 0 && st.Clients.AcksGood == uint64(len(acks))
				})
				if st.Clients.AcksMismatched != 0 {
					t.Errorf("chattyd counted %d mismatched acks", st.Clients.AcksMismatched)
				}
			})
		}
	}
}

// ackedInOrder describes what is wrong with acks, or returns "": they
// must be 1, 2, 3 ... each once, ending at lo or later but not after hi.
func ackedInOrder(acks []uint64, lo, hi uint64) string {
	for i, seq := range acks {
		if seq != uint64(i)+1 {
			return fmt.Sprintf("ACK %d names seq %d, want %d", i+1, seq, i+1)
		}
	}
	n := uint64(len(acks))
	switch {
	case n < lo:
		return fmt.Sprintf("%d messages acknowledged, want at least %d", n, lo)
	case n > hi:
		return fmt.Sprintf("seq %d acknowledged; nothing after %d verifies", n, hi)
	}
	return ""
}

// workerProc is a `chattyd worker` the test runs on its own.
type workerProc struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer  // its log; read only once done is closed
	done   chan struct{} // closed when it has exited
}

// startWorker runs `chattyd worker` with args; the test's cleanup kills
// it if it is still running and waits for it.
func startWorker(t *testing.T, args ...string) *workerProc {
	t.Helper()
	w := &workerProc{done: make(chan struct{})}
	w.cmd = exec.Command(harness.BuildBinaries(t).Chattyd, append([]string{"worker"}, args...)...)
	w.cmd.Stderr = &w.stderr
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start chattyd worker: %v", err)
	}
	go func() {
		defer close(w.done)
		w.cmd.Wait()
	}()
	t.Cleanup(func() {
		w.cmd.Process.Kill()
		<-w.done
	})
	return w
}

// wait waits for the worker to exit and returns its exit status and log.
func (w *workerProc) wait(t *testing.T, timeout time.Duration) (code int, log string) {
	t.Helper()
	select {
	case <-w.done:
		return w.cmd.ProcessState.ExitCode(), w.stderr.String()
	case <-time.After(timeout):
		t.Fatalf("chattyd worker still running %s after it should have exited", timeout)
		return 0, ""
	}
}
