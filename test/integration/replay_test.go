package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// Slots carry on (pool.replay): eight slots, four of built-in workers and
// four of an unchanged original-style worker (testdata/origworker, started
// through a shell that forks it, so the connection is held by a child of
// the slot's process), every worker living 0.5 to 2 s, under a feed of
// 2,000 lines a second. With replay every slot acknowledges every line,
// duplicates counted and no gap; without it the original-style workers'
// own records show the lines their slots never got.

// replayStatus is the part of chattyctl status --json these tests read.
type replayStatus struct {
	Clients struct {
		Connected int `json:"connected"`
	} `json:"clients"`
	Stream struct {
		Last uint64 `json:"last"`
	} `json:"stream"`
	Pool struct {
		Replay       string         `json:"replay"`
		ReplayTotals replayCounters `json:"replay_totals"`
		Slots        []struct {
			Slot      int            `json:"slot"`
			Restarts  int            `json:"restarts"`
			LastAcked uint64         `json:"last_acked"`
			Replay    replayCounters `json:"replay"`
		} `json:"slots"`
	} `json:"pool"`
}

type replayCounters struct {
	Identified uint64 `json:"identified"`
	Resumed    uint64 `json:"resumed"`
	Gaps       uint64 `json:"gaps"`
	GapLines   uint64 `json:"gap_lines"`
	Duplicates uint64 `json:"duplicates"`
}

const (
	replaySlots    = 8
	replayBuiltIn  = 4 // slots 1..4 run the built-in worker, the rest origworker
	replayRate     = 2000
	replayLineSize = 48
)

// buildOrigWorker builds testdata/origworker and returns its path.
func buildOrigWorker(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not in PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "origworker")
	if out, err := exec.Command(gobin, "build", "-o", bin, "./testdata/origworker").CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/origworker: %v\n%s", err, out)
	}
	return bin
}

// startReplayPool starts chattyd with the mixed pool and pool.replay
// mode, and returns it with the directory of the original-style workers'
// records (one file per slot).
func startReplayPool(t *testing.T, mode string) (*harness.Daemon, string) {
	t.Helper()
	orig := buildOrigWorker(t)
	chattyd := harness.BuildBinaries(t).Chattyd
	records := t.TempDir()
	script := `if [ "$CHATTY_SLOT" -le ` + strconv.Itoa(replayBuiltIn) + ` ]; then
  exec "$0" worker --addr "$CHATTY_ADDR" --slot "$CHATTY_SLOT" --lifetime-min 500ms --lifetime-max 2s
fi
ORIGWORKER_RECORD="$2/slot-$CHATTY_SLOT" "$1"
exit $?`
	cfg := fmt.Sprintf(`version: 1
pool:
  size: %d
  replay: %s
  min_uptime: 100ms
  backoff_initial: 50ms
  backoff_max: 200ms
  command: [/bin/sh, -c, %q, %q, %q, %q]
`, replaySlots, mode, script, chattyd, orig, records)
	d := harness.StartDaemon(t, harness.Options{Config: cfg})
	return d, records
}

// feedAtRate feeds lines "L<n> xxx..." numbered from 1 at replayRate a
// second for dur, and returns how many it fed.
func feedAtRate(t *testing.T, d *harness.Daemon, dur time.Duration) int {
	t.Helper()
	const tick = 10 * time.Millisecond
	per := replayRate * int(tick) / int(time.Second)
	w := d.FeedWriter()
	n := 0
	start := time.Now()
	var buf bytes.Buffer
	for time.Since(start) < dur {
		// Catch up with the clock, so a slow moment does not lower the rate.
		due := int(time.Since(start)/tick+1) * per
		buf.Reset()
		for ; n < due; n++ {
			l := fmt.Sprintf("L%d ", n+1)
			buf.WriteString(l)
			buf.Write(bytes.Repeat([]byte{'x'}, replayLineSize-len(l)))
			buf.WriteByte('\n')
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			t.Fatalf("feed: %v", err)
		}
		time.Sleep(time.Until(start.Add(time.Duration(n/per) * tick)))
	}
	return n
}

// readRecord returns how often each line number appears in a slot's
// record, and the largest.
func readRecord(t *testing.T, path string) (map[int]int, int) {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, 0
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := make(map[int]int)
	top := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		b := sc.Bytes()
		if len(b) < 2 || b[0] != 'L' {
			continue // a line cut short by a worker's end
		}
		n, err := strconv.Atoi(string(b[1:]))
		if err != nil {
			continue
		}
		seen[n]++
		top = max(top, n)
	}
	return seen, top
}

// missing returns how many of lines 1..n seen lacks, and the first.
func missing(seen map[int]int, n int) (count, first int) {
	for i := 1; i <= n; i++ {
		if seen[i] == 0 {
			if count == 0 {
				first = i
			}
			count++
		}
	}
	return count, first
}

func replayDuration(long, short time.Duration) time.Duration {
	if testing.Short() {
		return short
	}
	return long
}

// runReplay feeds the mixed pool for dur and waits until every slot has
// got past the last line: the original-style slots by their records, the
// built-in ones by their last acknowledged line.
func runReplay(t *testing.T, mode string, dur time.Duration) (d *harness.Daemon, records string, n int, st replayStatus) {
	d, records = startReplayPool(t, mode)
	sock := d.ControlSocket()
	// Every slot's first worker connected before the first line, so
	// that every slot must get every line.
	poll.Eventually(t, long, func() bool {
		ctlJSON(t, sock, &st, "status")
		if len(st.Pool.Slots) != replaySlots || st.Clients.Connected < replaySlots {
			return false
		}
		for _, s := range st.Pool.Slots {
			if mode != "none" && s.Replay.Identified == 0 {
				return false
			}
		}
		return true
	}, "every slot's worker is connected")
	n = feedAtRate(t, d, dur)
	if mode == "none" {
		// A slot whose worker was being replaced when the last lines
		// were fed never gets them. Once each slot's worker of then has
		// ended, its record is complete.
		ctlJSON(t, sock, &st, "status")
		restarts := map[int]int{}
		for _, s := range st.Pool.Slots {
			restarts[s.Slot] = s.Restarts
		}
		poll.Eventually(t, long, func() bool {
			ctlJSON(t, sock, &st, "status")
			for _, s := range st.Pool.Slots {
				if s.Restarts <= restarts[s.Slot] {
					return false
				}
			}
			return true
		}, "every slot's worker has been replaced since the feed stopped")
		return d, records, n, st
	}
	poll.Eventually(t, long, func() bool {
		for s := replayBuiltIn + 1; s <= replaySlots; s++ {
			if _, top := readRecord(t, filepath.Join(records, fmt.Sprintf("slot-%d", s))); top < n {
				return false
			}
		}
		ctlJSON(t, sock, &st, "status")
		for _, s := range st.Pool.Slots {
			if s.Slot <= replayBuiltIn && s.LastAcked < st.Stream.Last {
				return false
			}
		}
		return true
	}, fmt.Sprintf("every slot has got line %d", n))
	ctlJSON(t, sock, &st, "status")
	return d, records, n, st
}

func TestPoolReplaySlotsGetEveryLine(t *testing.T) {
	t.Parallel()
	_, records, n, st := runReplay(t, "unacked", replayDuration(30*time.Second, 6*time.Second))
	if st.Pool.Replay != "unacked" {
		t.Errorf("status says pool.replay %q, want unacked", st.Pool.Replay)
	}
	tot := st.Pool.ReplayTotals
	if tot.Gaps != 0 || tot.GapLines != 0 {
		t.Errorf("%d gaps (%d lines) with retention on and a few seconds behind", tot.Gaps, tot.GapLines)
	}
	var dupTotal int
	for _, s := range st.Pool.Slots {
		r := s.Replay
		// Every worker that ended was recognised, and every one after
		// the slot's first carried on after its predecessor.
		if r.Identified < uint64(s.Restarts) || r.Identified < 2 || r.Resumed+1 != r.Identified {
			t.Errorf("slot %d: %d restarts, %d workers identified, %d resumed; want every worker identified and all but the first resumed",
				s.Slot, s.Restarts, r.Identified, r.Resumed)
		}
		if s.Slot <= replayBuiltIn {
			continue
		}
		seen, _ := readRecord(t, filepath.Join(records, fmt.Sprintf("slot-%d", s.Slot)))
		if c, at := missing(seen, n); c > 0 {
			t.Errorf("slot %d: %d of lines 1..%d never acknowledged, the first %d", s.Slot, c, n, at)
		}
		dups := 0
		for _, k := range seen {
			dups += k - 1
		}
		dupTotal += dups
		// A line reaches a slot twice only if its worker ended without
		// acking it, which the daemon counts.
		if uint64(dups) > r.Duplicates {
			t.Errorf("slot %d: %d lines recorded twice, but the daemon counted only %d duplicates", s.Slot, dups, r.Duplicates)
		}
	}
	t.Logf("%d lines, %d workers identified, %d resumed, %d duplicates counted (%d seen by the original-style workers)",
		n, tot.Identified, tot.Resumed, tot.Duplicates, dupTotal)
}

func TestPoolReplayNoneShowsGaps(t *testing.T) {
	t.Parallel()
	_, records, n, st := runReplay(t, "none", replayDuration(10*time.Second, 5*time.Second))
	if tot := st.Pool.ReplayTotals; tot.Identified != 0 || tot.Resumed != 0 {
		t.Errorf("with pool.replay: none, %d workers identified and %d resumed", tot.Identified, tot.Resumed)
	}
	lost := 0
	for s := replayBuiltIn + 1; s <= replaySlots; s++ {
		seen, _ := readRecord(t, filepath.Join(records, fmt.Sprintf("slot-%d", s)))
		c, _ := missing(seen, n)
		lost += c
	}
	// Every slot's first worker was connected before line 1, so each line
	// missing was fed while a slot's worker was being replaced: what
	// replay exists to fix, and what the test above would see.
	if lost == 0 {
		t.Fatalf("without replay the original-style slots still got every one of %d lines: the replay test cannot fail", n)
	}
	t.Logf("without replay the original-style slots missed %d line deliveries of %d", lost, n*(replaySlots-replayBuiltIn))
}
