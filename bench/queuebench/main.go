// Command queuebench measures chattyd's work queue (broadcast.delivery:
// one) with the real binary.
//
// Throughput: -workers acking workers (connections of this process, each
// acknowledging every line, the acks of one read in one write) take
// -lines lines of -size bytes fed to chattyd's stdin as fast as it reads
// them; the rate is lines handed out and acknowledged per second, from
// the first byte fed to the last ack counted by chattyd.
//
// Redelivery: a worker process (this program re-run with -hold) takes
// max_in_flight (64) lines and never acknowledges them; the acking
// workers connect, the holder is killed with SIGKILL, and the time from
// the kill until the acking workers have acknowledged all of its lines is
// measured, -rounds times (p50, p99, max).
//
// NATS (unless -nats=false): the same work through a NATS JetStream
// work-queue consumer, and through chattyd's work queue across machines;
// see nats.go.
//
// It prints one line per measurement and then the results as one JSON
// object.
//
//	go build -o bin/chattyd ./daemon && go run ./bench/queuebench -bin bin/chattyd
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/pkg/control"
)

func main() {
	bin := flag.String("bin", "bin/chattyd", "the chattyd `binary` to measure")
	workers := flag.Int("workers", 16, "acking workers")
	lines := flag.Int("lines", 4_000_000, "lines to hand out in the throughput run")
	size := flag.Int("size", 64, "bytes per line, newline excluded")
	window := flag.Int("window", 64, "broadcast.work_queue.max_in_flight")
	rounds := flag.Int("rounds", 200, "SIGKILLed holders in the redelivery run")
	jsonOut := flag.String("json", "", "also write the JSON results to this `file`")
	hold := flag.String("hold", "", "internal: connect to this address, read and never acknowledge")
	withNATS := flag.Bool("nats", true, "also measure a NATS JetStream work queue, and chattyd's work queue across machines")
	natsLines := flag.Int("nats-lines", 200_000, "lines through NATS in each NATS run")
	flag.Parse()
	if *hold != "" {
		holdLines(*hold)
		return
	}
	if *workers < 1 || *lines < 1 || *size < 16 || *rounds < 0 || *window < 1 {
		fmt.Fprintln(os.Stderr, "queuebench: -workers, -lines and -window must be at least 1, -size at least 16, -rounds not negative")
		os.Exit(2)
	}
	if !*withNATS {
		*natsLines = 0
	}
	res, err := run(*bin, *workers, *lines, *size, *window, *rounds, *natsLines)
	if err != nil {
		fmt.Fprintln(os.Stderr, "queuebench:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	if *jsonOut != "" {
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "queuebench:", err)
			os.Exit(1)
		}
	}
}

// Results is what queuebench reports, in JSON.
type Results struct {
	NProc   int    `json:"nproc"`
	Load1   string `json:"load1"` // the 1-minute load average at the start
	Go      string `json:"go"`
	Workers int    `json:"workers"`
	Window  int    `json:"window"`
	Lines   int    `json:"lines"`
	Size    int    `json:"size"`
	// LinesPerSecond is lines handed out and acknowledged per second.
	LinesPerSecond float64 `json:"lines_per_second"`
	Redeliveries   uint64  `json:"redeliveries"` // during the throughput run; 0 expected
	// Rounds holders of Held lines each were killed; Redelivery is from
	// the SIGKILL until another worker acknowledged the last of them, ms.
	Rounds     int     `json:"rounds"`
	Held       int     `json:"held"`
	Redelivery Latency `json:"redelivery_ms"`
	// NATSLines lines went through one nats-server: NATSLinesPerSecond
	// through a JetStream work-queue consumer with Workers subscribers
	// acking each, Ratio is LinesPerSecond over it, and
	// AcrossLinesPerSecond through chattyd's work queue across machines.
	NATSLines            int     `json:"nats_lines,omitempty"`
	NATSLinesPerSecond   float64 `json:"nats_lines_per_second,omitempty"`
	Ratio                float64 `json:"chattyd_over_nats,omitempty"`
	AcrossLinesPerSecond float64 `json:"across_machines_lines_per_second,omitempty"`
}

// Latency is a distribution, in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func run(bin string, workers, lines, size, window, rounds, natsLines int) (Results, error) {
	res := Results{NProc: runtime.NumCPU(), Go: runtime.Version(), Workers: workers, Window: window, Lines: lines, Size: size, Rounds: rounds, Held: window, NATSLines: natsLines}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.Load1 = strings.Fields(string(b))[0]
	}
	dir, err := os.MkdirTemp("", "qb")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "chattyd.yaml")
	conf := fmt.Sprintf("version: 1\nbroadcast:\n  listen: 127.0.0.1:0\n  delivery: one\n  work_queue:\n    max_in_flight: %d\n    max_deliveries: 1000\nfeed:\n  on_eof: keep\npool:\n  size: 0\nlog:\n  level: warning\n", window)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return res, err
	}
	p, err := chattydproc.Start(chattydproc.Options{
		Bin: bin, ControlSocket: filepath.Join(dir, "c.sock"), Args: []string{"--config", cfg},
		Stderr: os.Stderr, KillWithParent: true,
	})
	if err != nil {
		return res, err
	}
	defer p.Stop(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	addrs, err := p.Addrs(ctx, 10*time.Second)
	if err != nil {
		return res, err
	}
	feed := newFeeder(p.Feed())
	defer feed.close()

	if res.LinesPerSecond, res.Redeliveries, err = throughput(ctx, p, feed, addrs.Text, workers, lines, size); err != nil {
		return res, err
	}
	fmt.Printf("throughput: %d lines of %d bytes to %d workers (window %d): %.0f lines/s, %d redeliveries\n",
		lines, size, workers, window, res.LinesPerSecond, res.Redeliveries)
	if rounds > 0 {
		if res.Redelivery, err = redelivery(ctx, p, feed, addrs.Text, workers, window, rounds); err != nil {
			return res, err
		}
		fmt.Printf("redelivery: %d holders of %d lines SIGKILLed: all their lines acknowledged by others after p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			rounds, window, res.Redelivery.P50, res.Redelivery.P99, res.Redelivery.Max)
	}
	if natsLines > 0 {
		p.Stop(5 * time.Second) // the NATS runs have the CPUs to themselves
		s, err := startNATS()
		if err != nil {
			return res, err
		}
		defer s.stop()
		if res.NATSLinesPerSecond, err = natsWorkQueue(ctx, s.url, workers, natsLines, size); err != nil {
			return res, err
		}
		res.Ratio = res.LinesPerSecond / res.NATSLinesPerSecond
		fmt.Printf("NATS JetStream work queue: %d messages of %d bytes, %d subscribers acking each: %.0f messages/s; chattyd's work queue %.1f times that\n",
			natsLines, size, workers, res.NATSLinesPerSecond, res.Ratio)
		if res.AcrossLinesPerSecond, err = acrossMachines(ctx, bin, s.url, workers, natsLines, size, window); err != nil {
			return res, err
		}
		fmt.Printf("across machines: %d lines through chattyd's work-queue stream to %d workers: %.0f lines/s\n",
			natsLines, workers, res.AcrossLinesPerSecond)
	}
	return res, nil
}

// feeder writes to chattyd's stdin from one goroutine, so that a full
// queue holding the feed back never blocks the measuring.
type feeder struct {
	w    *os.File
	in   chan []byte
	done chan error
}

func newFeeder(w *os.File) *feeder {
	f := &feeder{w: w, in: make(chan []byte, 64), done: make(chan error, 1)}
	go func() {
		var err error
		for b := range f.in {
			if err == nil {
				_, err = w.Write(b)
			}
		}
		f.done <- err
	}()
	return f
}

func (f *feeder) write(b []byte) { f.in <- b }

func (f *feeder) close() error {
	close(f.in)
	return <-f.done
}

func queueOf(ctx context.Context, p *chattydproc.Process) (*control.QueueStatus, error) {
	st, err := p.Control().Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Queue == nil {
		return nil, errors.New("chattyd reports no work queue; is broadcast.delivery: one supported?")
	}
	return st.Queue, nil
}

// waitQueue polls the status until ok accepts it.
func waitQueue(ctx context.Context, p *chattydproc.Process, every time.Duration, ok func(*control.QueueStatus) bool) (*control.QueueStatus, error) {
	for {
		q, err := queueOf(ctx, p)
		if err != nil {
			return nil, err
		}
		if ok(q) {
			return q, nil
		}
		select {
		case <-ctx.Done():
			return q, fmt.Errorf("waiting for the work queue: %w; last %+v", ctx.Err(), *q)
		case <-time.After(every):
		}
	}
}

// acker is a worker of this process: it acknowledges every line and
// calls seen, if set, with each.
type acker struct {
	conn net.Conn
	wg   sync.WaitGroup
}

func dialAcker(addr string, acked *atomic.Int64, seen func(line []byte, at time.Time)) (*acker, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	a := &acker{conn: c}
	a.wg.Go(func() {
		r := bufio.NewReaderSize(c, 256<<10)
		var out []byte
		n := int64(0)
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return
			}
			line = line[:len(line)-1]
			out = append(strconv.AppendInt(append(out, "ACK_RECEIVED "...), int64(len(line)), 10), '\n')
			n++
			if seen != nil {
				seen(line, time.Time{})
			}
			if r.Buffered() == 0 {
				if _, err := c.Write(out); err != nil {
					return
				}
				if seen != nil {
					seen(nil, time.Now())
				}
				acked.Add(n)
				out, n = out[:0], 0
			}
		}
	})
	return a, nil
}

func (a *acker) close() { a.conn.Close(); a.wg.Wait() }

func throughput(ctx context.Context, p *chattydproc.Process, feed *feeder, addr string, workers, lines, size int) (float64, uint64, error) {
	var acked atomic.Int64
	var ws []*acker
	defer func() {
		for _, a := range ws {
			a.close()
		}
	}()
	for range workers {
		a, err := dialAcker(addr, &acked, nil)
		if err != nil {
			return 0, 0, err
		}
		ws = append(ws, a)
	}
	if _, err := waitQueue(ctx, p, 10*time.Millisecond, func(q *control.QueueStatus) bool { return len(q.Workers) == workers }); err != nil {
		return 0, 0, err
	}
	// One block of 1024 numbered lines, fed again and again.
	var block bytes.Buffer
	for i := range 1024 {
		l := fmt.Sprintf("line %08d ", i)
		block.WriteString(l + strings.Repeat("x", size-len(l)) + "\n")
	}
	before, err := queueOf(ctx, p)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	go func() {
		for left := lines; left > 0; left -= 1024 {
			n := min(left, 1024)
			feed.write(block.Bytes()[:n*(size+1)])
		}
	}()
	for acked.Load() < int64(lines) {
		if ctx.Err() != nil {
			return 0, 0, fmt.Errorf("throughput: %d of %d lines acknowledged: %w", acked.Load(), lines, ctx.Err())
		}
		time.Sleep(200 * time.Microsecond)
	}
	q, err := waitQueue(ctx, p, time.Millisecond, func(q *control.QueueStatus) bool { return q.Acked-before.Acked >= uint64(lines) })
	elapsed := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	return float64(lines) / elapsed.Seconds(), q.Redeliveries - before.Redeliveries, nil
}

// holdLines is the -hold worker: it reads lines and acknowledges none
// until it is killed.
func holdLines(addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "queuebench -hold:", err)
		os.Exit(2)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			os.Exit(2)
		}
	}
}

func redelivery(ctx context.Context, p *chattydproc.Process, feed *feeder, addr string, workers, held, rounds int) (Latency, error) {
	self, err := os.Executable()
	if err != nil {
		return Latency{}, err
	}
	var ms []float64
	for round := range rounds {
		cmd := exec.Command(self, "-hold", addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return Latency{}, err
		}
		if _, err := waitQueue(ctx, p, time.Millisecond, func(q *control.QueueStatus) bool { return len(q.Workers) == 1 }); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return Latency{}, err
		}
		prefix := fmt.Sprintf("round %d ", round)
		var b bytes.Buffer
		for i := range held {
			fmt.Fprintf(&b, "%s%d\n", prefix, i)
		}
		feed.write(b.Bytes())
		if _, err := waitQueue(ctx, p, time.Millisecond, func(q *control.QueueStatus) bool { return q.InFlight == held }); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return Latency{}, err
		}
		// The takers: counting this round's lines, noting when the acks
		// of the last went out.
		var mu sync.Mutex
		got, pending := 0, 0
		var last time.Time
		done := make(chan struct{})
		seen := func(line []byte, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if line != nil {
				if bytes.HasPrefix(line, []byte(prefix)) {
					pending++
				}
				return
			}
			if pending > 0 {
				got += pending
				pending = 0
				if got == held {
					last = at
					close(done)
				}
			}
		}
		var acked atomic.Int64
		var takers []*acker
		for range workers {
			a, err := dialAcker(addr, &acked, seen)
			if err != nil {
				return Latency{}, err
			}
			takers = append(takers, a)
		}
		if _, err := waitQueue(ctx, p, time.Millisecond, func(q *control.QueueStatus) bool { return len(q.Workers) == workers+1 }); err != nil {
			return Latency{}, err
		}
		killed := time.Now()
		cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			return Latency{}, fmt.Errorf("round %d: %d of %d lines acknowledged by others 30s after the SIGKILL", round, got, held)
		}
		cmd.Wait()
		mu.Lock()
		ms = append(ms, float64(last.Sub(killed).Microseconds())/1000)
		mu.Unlock()
		for _, a := range takers {
			a.close()
		}
		if _, err := waitQueue(ctx, p, time.Millisecond, func(q *control.QueueStatus) bool {
			return len(q.Workers) == 0 && q.InFlight == 0 && q.Waiting == 0
		}); err != nil {
			return Latency{}, err
		}
	}
	slices.Sort(ms)
	at := func(f float64) float64 { return ms[min(len(ms)-1, int(f*float64(len(ms))))] }
	return Latency{P50: at(0.50), P99: at(0.99), Max: ms[len(ms)-1]}, nil
}
