// Command poolbench measures chattyd's worker pool with the real binary:
// how long scaling from 0 to N workers takes until all are connected, and
// how long a worker killed with SIGKILL takes to be replaced by a connected
// one (p50, p99 over many respawns).
//
// It runs the chattyd given by -bin on a configuration of its own (no
// workers, long worker lifetimes), scales by rewriting pool.size and
// sending SIGHUP, and learns what happens from chattyd's log on stderr,
// time-stamped as each line arrives. It prints one line per measurement
// and then the results as one JSON object.
//
// It starts chattyd with pool.size 0 in the file rather than --workers 0:
// flags override the file on every reload too, so --workers 0 would keep
// the pool empty through the SIGHUP.
//
//	go build -o bin/chattyd ./daemon && go run ./bench/poolbench -bin bin/chattyd
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/internal/procstat"
)

func main() {
	bin := flag.String("bin", "bin/chattyd", "the chattyd `binary` to measure")
	workers := flag.Int("workers", 200, "scale from 0 to this many workers")
	respawns := flag.Int("respawns", 200, "kill this many workers, one at a time, and time their replacement")
	timeout := flag.Duration("timeout", 30*time.Second, "give up on any one step after this long")
	jsonOut := flag.String("json", "", "also write the JSON results to this `file`")
	flag.Parse()
	if *workers < 1 || *respawns < 0 {
		fmt.Fprintln(os.Stderr, "poolbench: -workers must be at least 1 and -respawns not negative")
		os.Exit(2)
	}
	res, err := run(*bin, *workers, *respawns, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "poolbench:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	if *jsonOut != "" {
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "poolbench:", err)
			os.Exit(1)
		}
	}
}

// Results is what poolbench reports, in JSON.
type Results struct {
	Machine Machine `json:"machine"`
	Workers int     `json:"workers"`
	// ScaleUpMS is from the SIGHUP that raises pool.size from 0 to Workers
	// until chattyd has logged Workers new connections.
	ScaleUpMS float64 `json:"scale_up_ms"`
	// Respawns is how many workers were killed and replaced.
	Respawns int `json:"respawns"`
	// RespawnKill is from the SIGKILL to the replacement's "Connected to".
	RespawnKill Latency `json:"respawn_from_kill_ms"`
	// RespawnExit is from chattyd's "Process terminated" line to the
	// replacement's "Connected to": the pool's own share.
	RespawnExit Latency `json:"respawn_from_exit_ms"`
	// Backoffs counts respawns that chattyd delayed as crashes; it should
	// be 0, or the latencies include backoff.
	Backoffs int `json:"backoffs"`
	// ShutdownMS is from SIGTERM until chattyd exited, with every worker.
	ShutdownMS float64 `json:"shutdown_ms"`
	ExitCode   int     `json:"exit_code"`
}

// Latency summarises a set of durations, in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Machine describes where the numbers were measured.
type Machine struct {
	NProc  int    `json:"nproc"`
	CPU    string `json:"cpu"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Load1  string `json:"load1"` // the 1-minute load average at the start
}

// event is one line of chattyd's log that poolbench cares about.
type event struct {
	kind eventKind
	slot int // for workerConnected and terminated
	at   time.Time
}

type eventKind int

const (
	newConnection   eventKind = iota // [connection: N] New connection established
	workerConnected                  // [process: N] Connected to
	terminated                       // [process: N] Process terminated (...)
	backoff                          // [process: N] ... next start in ...
)

var processRE = regexp.MustCompile(`\[process: (\d+)\] (.*)`)

// parse turns one log line into an event; ok is false for other lines.
func parse(line string, at time.Time) (ev event, ok bool) {
	if strings.Contains(line, "] New connection established") {
		return event{kind: newConnection, at: at}, true
	}
	m := processRE.FindStringSubmatch(line)
	if m == nil {
		return event{}, false
	}
	slot, _ := strconv.Atoi(m[1])
	switch rest := m[2]; {
	case strings.HasPrefix(rest, "Connected to "):
		return event{kind: workerConnected, slot: slot, at: at}, true
	case strings.HasPrefix(rest, "Process terminated ("):
		return event{kind: terminated, slot: slot, at: at}, true
	case strings.Contains(rest, "next start in"):
		return event{kind: backoff, slot: slot, at: at}, true
	}
	return event{}, false
}

// daemon is the chattyd being measured.
type daemon struct {
	proc    *chattydproc.Process // its stdin is a pipe never written
	cfgPath string
	events  chan event
	done    chan struct{} // closed when the log ends
	timeout time.Duration
	tail    *tail
}

// tail keeps the last lines of chattyd's log for error messages.
type tail struct{ lines []string }

func (t *tail) add(s string) {
	if t.lines = append(t.lines, s); len(t.lines) > 20 {
		t.lines = t.lines[1:]
	}
}

const configTemplate = `version: 1
pool:
  size: %d
  # Workers are killed on purpose; a short min_uptime keeps their
  # replacement from being delayed as a crash.
  min_uptime: 50ms
  stop_timeout: 5s
  worker:
    lifetime_min: 1h
    lifetime_max: 1h
`

func start(bin string, timeout time.Duration) (*daemon, error) {
	dir, err := os.MkdirTemp("", "poolbench-")
	if err != nil {
		return nil, err
	}
	d := &daemon{cfgPath: filepath.Join(dir, "chattyd.yaml"), events: make(chan event, 4096),
		done: make(chan struct{}), timeout: timeout, tail: &tail{}}
	if err := d.writeConfig(0); err != nil {
		return nil, err
	}
	stderr, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// The feed is the launcher's pipe, held open until chattyd exits: it
	// never ends.
	d.proc, err = chattydproc.Start(chattydproc.Options{
		Bin:           bin,
		ControlSocket: filepath.Join(dir, "control.sock"),
		Args:          []string{"--config", d.cfgPath, "--listen", "127.0.0.1:0"},
		Stderr:        w,
	})
	w.Close() // chattyd has its own copy
	if err != nil {
		stderr.Close()
		return nil, err
	}
	go d.read(stderr)
	if _, err := d.proc.Ready(context.Background(), timeout); err != nil {
		d.kill()
		return nil, fmt.Errorf("%w; chattyd's last lines:\n%s", err, strings.Join(d.tail.lines, "\n"))
	}
	return d, nil
}

// read parses chattyd's log as it arrives.
func (d *daemon) read(r io.Reader) {
	defer close(d.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		now := time.Now()
		line := sc.Text()
		d.tail.add(line)
		if ev, ok := parse(line, now); ok {
			d.events <- ev
		}
	}
}

func (d *daemon) writeConfig(size int) error {
	tmp := d.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, configTemplate, size), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, d.cfgPath)
}

// nextMatching returns the next event that match accepts; seen, if set,
// is called with every event before.
func (d *daemon) nextMatching(match func(event) bool, seen func(event)) (event, error) {
	t := time.NewTimer(d.timeout)
	defer t.Stop()
	for {
		select {
		case ev := <-d.events:
			if seen != nil {
				seen(ev)
			}
			if match(ev) {
				return ev, nil
			}
		case <-d.done:
			return event{}, fmt.Errorf("chattyd's log ended; its last lines:\n%s", strings.Join(d.tail.lines, "\n"))
		case <-t.C:
			return event{}, fmt.Errorf("nothing awaited within %s; chattyd's last lines:\n%s", d.timeout, strings.Join(d.tail.lines, "\n"))
		}
	}
}

// drain takes every event already received.
func (d *daemon) drain(seen func(event)) {
	for {
		select {
		case ev := <-d.events:
			seen(ev)
		default:
			return
		}
	}
}

func (d *daemon) kill() {
	d.proc.KillGroup()
	<-d.proc.Done()
}

// workers returns chattyd's running workers by slot, from /proc: its
// children with CHATTY_SLOT in their environment.
func (d *daemon) workers() (map[int]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	parent := d.proc.PID()
	ws := make(map[int]int)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := procstat.Read(pid); err != nil || st.Zombie() || st.PPID != parent {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		for kv := range bytes.SplitSeq(env, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("CHATTY_SLOT=")); ok {
				if slot, err := strconv.Atoi(string(v)); err == nil {
					ws[slot] = pid
				}
			}
		}
	}
	return ws, nil
}

func run(bin string, n, respawns int, timeout time.Duration) (*Results, error) {
	res := &Results{Machine: machine(), Workers: n, Respawns: respawns}
	d, err := start(bin, timeout)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !d.proc.Exited() {
			d.kill()
		}
	}()

	// (a) Scale from 0 to n.
	if err := d.writeConfig(n); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := d.proc.Signal(syscall.SIGHUP); err != nil {
		return nil, err
	}
	conns := 0
	connected := make(map[int]bool)
	for conns < n || len(connected) < n {
		ev, err := d.nextMatching(func(ev event) bool { return ev.kind == newConnection || ev.kind == workerConnected }, nil)
		if err != nil {
			return nil, fmt.Errorf("scale to %d: %d connections so far: %w", n, conns, err)
		}
		if ev.kind == newConnection {
			if conns++; conns == n {
				res.ScaleUpMS = ms(ev.at.Sub(t0))
			}
		} else {
			connected[ev.slot] = true
		}
	}
	fmt.Printf("scale 0 -> %d workers: all connected in %.1f ms\n", n, res.ScaleUpMS)

	// (b) Kill one worker at a time and time its replacement.
	ws, err := d.workers()
	if err != nil {
		return nil, err
	}
	if len(ws) != n {
		return nil, fmt.Errorf("found %d workers in /proc, want %d", len(ws), n)
	}
	fromKill := make([]time.Duration, 0, respawns)
	fromExit := make([]time.Duration, 0, respawns)
	countBackoff := func(ev event) {
		if ev.kind == backoff {
			res.Backoffs++
		}
	}
	killed := make(map[int]bool) // PIDs killed, to spot a stale map
	for i := range respawns {
		slot := i%n + 1
		pid := ws[slot]
		if pid == 0 || killed[pid] {
			if ws, err = d.workers(); err != nil {
				return nil, err
			}
			if pid = ws[slot]; pid == 0 || killed[pid] {
				return nil, fmt.Errorf("slot %d has no new worker in /proc", slot)
			}
		}
		d.drain(countBackoff)
		tKill := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return nil, fmt.Errorf("kill worker %d of slot %d: %w", pid, slot, err)
		}
		killed[pid] = true
		var tExit time.Time
		ev, err := d.nextMatching(func(ev event) bool { return ev.kind == workerConnected && ev.slot == slot },
			func(ev event) {
				countBackoff(ev)
				if ev.kind == terminated && ev.slot == slot {
					tExit = ev.at
				}
			})
		if err != nil {
			return nil, fmt.Errorf("respawn %d (slot %d): %w", i+1, slot, err)
		}
		fromKill = append(fromKill, ev.at.Sub(tKill))
		if !tExit.IsZero() {
			fromExit = append(fromExit, ev.at.Sub(tExit))
		}
	}
	res.RespawnKill, res.RespawnExit = summarise(fromKill), summarise(fromExit)
	if respawns > 0 {
		fmt.Printf("respawn after SIGKILL (%d): kill -> connected p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			respawns, res.RespawnKill.P50, res.RespawnKill.P99, res.RespawnKill.Max)
		fmt.Printf("respawn after SIGKILL (%d): exit logged -> connected p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			len(fromExit), res.RespawnExit.P50, res.RespawnExit.P99, res.RespawnExit.Max)
		fmt.Printf("respawns delayed by backoff: %d\n", res.Backoffs)
	}

	// Shutdown, for completeness: SIGTERM stops every worker first.
	tTerm := time.Now()
	if err := d.proc.Signal(syscall.SIGTERM); err != nil {
		return nil, err
	}
	go d.drain(func(event) {})
	<-d.done
	<-d.proc.Done()
	err = d.proc.Err()
	res.ShutdownMS = ms(time.Since(tTerm))
	res.ExitCode = d.proc.ExitCode()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return nil, err
	}
	fmt.Printf("SIGTERM with %d workers: exited %d after %.1f ms\n", n, res.ExitCode, res.ShutdownMS)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func summarise(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	q := func(p float64) float64 { return ms(ds[min(len(ds)-1, int(p*float64(len(ds))))]) }
	return Latency{P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: ms(ds[len(ds)-1])}
}

func machine() Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var b []byte
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		m.Kernel = string(b)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.Load1 = f[0]
		}
	}
	return m
}
