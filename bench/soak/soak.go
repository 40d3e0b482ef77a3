package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/pkg/control/client"
)

// Config says what a soak run does.
type Config struct {
	Chattyd, Chattyctl string        // binaries
	Duration           time.Duration // of the loaded phase
	Rate               int           // feed lines a second
	Workers            int           // pool size at the start, and the most
	MinWorkers         int           // scale goes between MinWorkers and Workers
	LifetimeMin        time.Duration // of each worker
	LifetimeMax        time.Duration
	Subscribers        int           // external clients acking everything
	SendEvery          time.Duration // chattyctl send
	ScaleEvery         time.Duration // chattyctl scale
	SampleEvery        time.Duration // RSS, fds, goroutines, zombies
	WarmUp             time.Duration // before the memory baseline
	MaxRSSGrowth       float64       // allowed growth after warm-up, 0.10 for 10%
	Dir                string        // for the config, socket and log; a temporary one if empty
	Logf               func(format string, args ...any)
}

// Sample is one measurement of chattyd.
type Sample struct {
	At         time.Duration
	RSS        int64 // bytes
	FDs        int
	Goroutines int
	Workers    int // running, from status
	Clients    int
}

// Report is what a soak run measured.
type Report struct {
	LinesFed, Sends, Scales     int
	Deliveries                  uint64 // lines received by the external subscribers
	Lost, Reordered, Duplicated uint64 // over all external subscribers
	Unknown                     uint64 // lines that are neither feed lines nor sent messages
	SentSeen                    uint64 // chattyctl messages received, over all subscribers
	AcksGood, AcksMismatched    uint64 // from status at the end
	MismatchedCloses            int    // "Connection closed" lines with acks_mismatched other than 0
	Terminated, Stopped         int    // "Process terminated", "Process stopped" log lines
	StartFailures               int    // "Cannot start the worker" log lines
	Restarts                    uint64 // from status at the end
	SlowConsumers               uint64
	BaseFDs, EndFDs             int // idle chattyd before and after the run
	BaseGoroutines, EndGorout   int
	RSSBase, RSSEnd             int64 // max over the first and last windows after warm-up
	Zombies                     []int // children seen as zombies in two samples running
	Leftover                    []int // processes of chattyd's group left after it exited
	ExitCode                    int
	Samples                     []Sample
	Problems                    []string
}

// OK reports whether the run found no problem.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Run runs chattyd under cfg's load and checks it. It returns an error
// only when the run could not be done; what went wrong with chattyd is in
// the report's Problems.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "soak")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	sock := filepath.Join(dir, "control.sock")
	cfgPath := filepath.Join(dir, "chattyd.yaml")
	yaml := fmt.Sprintf(`version: 1
broadcast:
  listen: 127.0.0.1:0
  idle_timeout: 60s
feed:
  on_eof: keep
pool:
  size: 0
  min_uptime: 500ms
  stop_timeout: 5s
  worker:
    lifetime_min: %s
    lifetime_max: %s
    keepalive_min: 1s
    keepalive_max: 3s
`, cfg.LifetimeMin, cfg.LifetimeMax)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		return nil, err
	}

	logPath := filepath.Join(dir, "chattyd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	d, err := chattydproc.Start(chattydproc.Options{
		Bin:            cfg.Chattyd,
		ControlSocket:  sock,
		Args:           []string{"--config", cfgPath},
		Stdout:         logFile,
		Stderr:         logFile,
		KillWithParent: true,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		d.KillGroup()
		<-d.Done()
	}()
	rep := &Report{}
	ctl := d.Control()
	addrs, err := d.Addrs(ctx, 15*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w; see %s", err, logPath)
	}
	addr := addrs.Text
	logf("chattyd pid %d listens on %s", d.PID(), addr)

	// The idle baseline: no client, no worker.
	time.Sleep(500 * time.Millisecond)
	rep.BaseFDs, _ = countFDs(d.PID())
	rep.BaseGoroutines, _ = goroutines(ctx, ctl)

	// External subscribers first, so that they see every line from seq 1.
	subs := make([]*subscriber, cfg.Subscribers)
	for i := range subs {
		s, err := dialSubscriber(addr)
		if err != nil {
			return nil, err
		}
		subs[i] = s
	}
	defer func() {
		for _, s := range subs {
			s.conn.Close()
		}
	}()
	if err := waitClients(ctx, ctl, cfg.Subscribers, 10*time.Second); err != nil {
		return nil, err
	}
	var subsWG sync.WaitGroup
	for _, s := range subs {
		subsWG.Go(s.run)
	}

	if err := chattyctl(cfg.Chattyctl, sock, "scale", strconv.Itoa(cfg.Workers)); err != nil {
		return nil, err
	}
	logf("%d subscribers connected; scaled to %d workers; soaking for %s at %d lines/s", cfg.Subscribers, cfg.Workers, cfg.Duration, cfg.Rate)

	// The loaded phase.
	start := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, cfg.Duration)
	defer stopLoad()
	fedDone := make(chan int, 1)
	go func() { fedDone <- feed(loadCtx, d.Feed(), cfg.Rate) }()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	sendT := time.NewTicker(cfg.SendEvery)
	scaleT := time.NewTicker(cfg.ScaleEvery)
	sampleT := time.NewTicker(cfg.SampleEvery)
	defer sendT.Stop()
	defer scaleT.Stop()
	defer sampleT.Stop()
	zombieSeen := make(map[int]bool)
	zombies := make(map[int]bool)
	var ctlErrs int
loop:
	for {
		select {
		case <-loadCtx.Done():
			break loop
		case <-sendT.C:
			rep.Sends++
			if err := chattyctl(cfg.Chattyctl, sock, "send", "info", fmt.Sprintf("soak message %d", rep.Sends)); err != nil {
				ctlErrs++
				rep.problem("chattyctl send: %v", err)
			}
		case <-scaleT.C:
			n := cfg.MinWorkers + rng.IntN(cfg.Workers-cfg.MinWorkers+1)
			rep.Scales++
			if err := chattyctl(cfg.Chattyctl, sock, "scale", strconv.Itoa(n)); err != nil {
				ctlErrs++
				rep.problem("chattyctl scale %d: %v", n, err)
			}
		case <-sampleT.C:
			s, err := sample(ctx, ctl, d.PID(), time.Since(start))
			if err != nil {
				rep.problem("sample: %v", err)
				continue
			}
			rep.Samples = append(rep.Samples, s)
			now := childZombies(d.PID())
			for pid := range now {
				if zombieSeen[pid] {
					zombies[pid] = true
				}
			}
			zombieSeen = now
			logf("%6s rss %6.1f MiB  fds %5d  goroutines %6d  workers %3d  clients %3d  delivered %d",
				s.At.Round(time.Second), float64(s.RSS)/(1<<20), s.FDs, s.Goroutines, s.Workers, s.Clients, deliveries(subs))
		}
		if ctlErrs > 10 {
			break loop
		}
	}
	rep.LinesFed = <-fedDone
	logf("fed %d lines; draining", rep.LinesFed)

	// Every subscriber must get every line and every message sent: the
	// last send can come after the last feed line, as the sender and the
	// feeder stop on the same deadline.
	drain := time.Now().Add(30 * time.Second)
	for _, s := range subs {
		for (s.last.Load() < uint64(rep.LinesFed) || s.sent.Load() < uint64(rep.Sends)) && time.Now().Before(drain) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Back to idle: no workers, no subscribers.
	if err := chattyctl(cfg.Chattyctl, sock, "scale", "0"); err != nil {
		rep.problem("chattyctl scale 0: %v", err)
	}
	for _, s := range subs {
		s.conn.Close()
	}
	subsWG.Wait()
	idleBy := time.Now().Add(30 * time.Second)
	var st statusView
	for time.Now().Before(idleBy) {
		st, err = readStatus(ctx, ctl)
		if err == nil && st.connected == 0 && st.running == 0 && st.slots == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.connected != 0 || st.running != 0 {
		rep.problem("not idle 30s after the run: %d clients, %d workers", st.connected, st.running)
	}
	// Closed connections' descriptors and goroutines go in their own
	// time: wait up to 10 s for the idle baseline, then take what is left.
	for settle := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		rep.EndFDs, _ = countFDs(d.PID())
		rep.EndGorout, _ = goroutines(ctx, ctl)
		if rep.EndFDs <= rep.BaseFDs && rep.EndGorout <= rep.BaseGoroutines || time.Now().After(settle) {
			break
		}
	}
	full, err := ctl.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("final status: %w", err)
	}
	rep.AcksGood, rep.AcksMismatched = full.Clients.AcksGood, full.Clients.AcksMismatched
	rep.Restarts, rep.SlowConsumers = full.Pool.Restarts, full.Clients.SlowConsumers

	// Stop chattyd as an operator would, and check it leaves nothing.
	d.Signal(syscall.SIGTERM)
	if rep.ExitCode, err = d.Wait(30 * time.Second); err != nil {
		d.KillGroup()
		<-d.Done()
		rep.ExitCode = -1
	}
	// A worker chattyd did not wait for may still be exiting: give the
	// group 5 s to empty before reporting what is left.
	for gone := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if rep.Leftover = groupProcs(d.PID()); len(rep.Leftover) == 0 || time.Now().After(gone) {
			break
		}
	}

	// Subscribers' findings.
	for i, s := range subs {
		rep.Deliveries += s.lines.Load()
		rep.Lost += s.lost.Load()
		rep.Reordered += s.reordered.Load()
		rep.Duplicated += s.dup.Load()
		rep.Unknown += s.unknown.Load()
		rep.SentSeen += s.sent.Load()
		if last := s.last.Load(); last != uint64(rep.LinesFed) {
			rep.problem("subscriber %d: last line %d, want %d", i+1, last, rep.LinesFed)
		}
		if err := s.err.Load(); err != nil {
			rep.problem("subscriber %d: %v", i+1, *err)
		}
	}
	for pid := range zombies {
		rep.Zombies = append(rep.Zombies, pid)
	}
	slices.Sort(rep.Zombies)
	scanLog(logPath, rep)
	rep.check(cfg)
	return rep, nil
}

// check turns the measurements into problems.
func (r *Report) check(cfg Config) {
	if r.Lost+r.Reordered+r.Duplicated+r.Unknown > 0 {
		r.problem("external subscribers: %d lost, %d reordered, %d duplicated, %d unknown lines", r.Lost, r.Reordered, r.Duplicated, r.Unknown)
	}
	if want := uint64(r.Sends * cfg.Subscribers); r.SentSeen != want {
		r.problem("external subscribers saw %d chattyctl messages, want %d", r.SentSeen, want)
	}
	if r.AcksMismatched != 0 || r.MismatchedCloses != 0 {
		r.problem("mismatched acks: %d in status, %d connections closed with some", r.AcksMismatched, r.MismatchedCloses)
	}
	if r.AcksGood == 0 {
		r.problem("no good acks at all")
	}
	if uint64(r.Terminated+r.StartFailures) != r.Restarts {
		r.problem("status counts %d restarts; the log has %d terminations and %d failed starts", r.Restarts, r.Terminated, r.StartFailures)
	}
	if r.Terminated == 0 {
		r.problem("no worker ended its life: no churn")
	}
	if r.SlowConsumers != 0 {
		r.problem("%d slow consumers", r.SlowConsumers)
	}
	if r.EndFDs > r.BaseFDs {
		r.problem("file descriptors: %d idle before, %d idle after", r.BaseFDs, r.EndFDs)
	}
	if r.EndGorout > r.BaseGoroutines+2 {
		r.problem("goroutines: %d idle before, %d idle after", r.BaseGoroutines, r.EndGorout)
	}
	r.RSSBase, r.RSSEnd = rssWindows(r.Samples, cfg.WarmUp, cfg.Duration)
	if r.RSSBase > 0 && float64(r.RSSEnd) > float64(r.RSSBase)*(1+cfg.MaxRSSGrowth) {
		r.problem("resident memory grew from %.1f MiB after warm-up to %.1f MiB (more than %.0f%%)",
			float64(r.RSSBase)/(1<<20), float64(r.RSSEnd)/(1<<20), 100*cfg.MaxRSSGrowth)
	}
	if len(r.Zombies) > 0 {
		r.problem("zombie children left unreaped: %v", r.Zombies)
	}
	if len(r.Leftover) > 0 {
		r.problem("processes of chattyd's group left after it exited: %v", r.Leftover)
	}
	if r.ExitCode != 0 {
		r.problem("chattyd exited with status %d after SIGTERM, want 0", r.ExitCode)
	}
}

// rssWindows returns the highest RSS in the first and in the last fifth
// of the samples taken after warmUp.
func rssWindows(samples []Sample, warmUp, total time.Duration) (base, end int64) {
	var after []Sample
	for _, s := range samples {
		if s.At >= warmUp {
			after = append(after, s)
		}
	}
	if len(after) < 2 {
		return 0, 0
	}
	w := max(1, len(after)/5)
	for _, s := range after[:w] {
		base = max(base, s.RSS)
	}
	for _, s := range after[len(after)-w:] {
		end = max(end, s.RSS)
	}
	return base, end
}

// feed writes rate lines a second to w until ctx is done and returns how
// many it wrote. Line seq is "<seq> <padding>", 20 to 99 bytes long so
// that an ack paired with the wrong line is mismatched.
func feed(ctx context.Context, w io.Writer, rate int) int {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	seq := 0
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return seq
		case <-t.C:
		}
		due := int(time.Since(start).Seconds() * float64(rate))
		buf = buf[:0]
		for seq < due {
			seq++
			buf = appendLine(buf, seq)
		}
		if _, err := w.Write(buf); err != nil {
			return seq
		}
	}
}

func appendLine(b []byte, seq int) []byte {
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ' ')
	for range 12 + seq%80 {
		b = append(b, 'p')
	}
	return append(b, '\n')
}

// subscriber is an external client that checks the order of the feed and
// acknowledges every line, as chatty's workers do.
type subscriber struct {
	conn                                 *net.TCPConn
	last                                 atomic.Uint64 // highest feed seq received
	lines, lost, reordered, dup, unknown atomic.Uint64
	sent                                 atomic.Uint64 // chattyctl messages
	err                                  atomic.Pointer[error]
	keepAlivesSent, keepAlivesAnswered   atomic.Uint64
	stopKeepAlive                        chan struct{}
	writeMu                              sync.Mutex // serialises writes
}

func dialSubscriber(addr string) (*subscriber, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &subscriber{conn: c.(*net.TCPConn), stopKeepAlive: make(chan struct{})}, nil
}

func (s *subscriber) write(b []byte) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := s.conn.Write(b)
	return err
}

var sentRE = regexp.MustCompile(`^\S+Z \[Info\] soak message \d+$`)

// run reads until the connection is closed.
func (s *subscriber) run() {
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.stopKeepAlive:
				return
			case <-t.C:
				s.keepAlivesSent.Add(1)
				if s.write([]byte("KEEP_ALIVE\n")) != nil {
					return
				}
			}
		}
	}()
	defer close(s.stopKeepAlive)
	br := bufio.NewReaderSize(s.conn, 256<<10)
	var acks []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				s.err.Store(&err)
			}
			return
		}
		line = line[:len(line)-1]
		switch {
		case string(line) == "KEEP_ALIVE_ACK":
			s.keepAlivesAnswered.Add(1)
			continue
		case sentRE.Match(line):
			s.sent.Add(1)
		default:
			sp := bytes.IndexByte(line, ' ')
			var seq uint64
			var err error
			if sp > 0 {
				seq, err = strconv.ParseUint(string(line[:sp]), 10, 64)
			}
			if sp <= 0 || err != nil || len(line) != sp+1+12+int(seq%80) {
				s.unknown.Add(1)
				break
			}
			s.lines.Add(1)
			switch last := s.last.Load(); {
			case seq == last+1:
				s.last.Store(seq)
			case seq > last+1:
				s.lost.Add(seq - last - 1)
				s.last.Store(seq)
			case seq <= last:
				s.reordered.Add(1)
			}
		}
		// Every line is acknowledged; the acks of one read go in one write.
		acks = append(acks, "ACK_RECEIVED "...)
		acks = strconv.AppendInt(acks, int64(len(line)), 10)
		acks = append(acks, '\n')
		if br.Buffered() == 0 {
			if err := s.write(acks); err != nil {
				return
			}
			acks = acks[:0]
		}
	}
}

func deliveries(subs []*subscriber) uint64 {
	var n uint64
	for _, s := range subs {
		n += s.lines.Load()
	}
	return n
}

var closedRE = regexp.MustCompile(`Connection closed .*acks_mismatched=(\d+)`)

// scanLog counts what the report needs in chattyd's log, once it exited.
func scanLog(logPath string, r *Report) {
	f, err := os.Open(logPath)
	if err != nil {
		r.problem("read the log: %v", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "] Process terminated ("):
			r.Terminated++
		case strings.Contains(line, "] Process stopped ("):
			r.Stopped++
		case strings.Contains(line, "Cannot start the worker"):
			r.StartFailures++
		case strings.Contains(line, "panic") || strings.Contains(line, "DATA RACE"):
			r.problem("chattyd's log: %s", line)
		}
		if m := closedRE.FindStringSubmatch(line); m != nil && m[1] != "0" {
			r.MismatchedCloses++
		}
	}
}

func chattyctl(bin, sock string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"--socket", sock}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

type statusView struct{ connected, running, slots int }

func readStatus(ctx context.Context, ctl *client.Client) (statusView, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := ctl.Status(ctx)
	if err != nil {
		return statusView{}, err
	}
	return statusView{st.Clients.Connected, st.Pool.Running, len(st.Pool.Slots)}, nil
}

func waitClients(ctx context.Context, ctl *client.Client, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := readStatus(ctx, ctl)
		if err == nil && st.connected >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d subscribers connected, want %d", st.connected, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sample(ctx context.Context, ctl *client.Client, pid int, at time.Duration) (Sample, error) {
	s := Sample{At: at}
	var err error
	if s.RSS, err = vmRSS(pid); err != nil {
		return s, err
	}
	if s.FDs, err = countFDs(pid); err != nil {
		return s, err
	}
	if s.Goroutines, err = goroutines(ctx, ctl); err != nil {
		return s, err
	}
	st, err := readStatus(ctx, ctl)
	s.Workers, s.Clients = st.running, st.connected
	return s, err
}

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func countFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// goroutines reads go_goroutines from chattyd's /metrics.
func goroutines(ctx context.Context, ctl *client.Client) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := ctl.Metric(ctx, "go_goroutines")
	return int(n), err
}

// procStat returns the state and parent of pid from /proc/PID/stat.
func procStat(pid int) (state byte, ppid, pgid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return 0, 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	pgid, _ = strconv.Atoi(f[2])
	return f[0][0], ppid, pgid, true
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// childZombies returns the zombie children of pid.
func childZombies(pid int) map[int]bool {
	out := make(map[int]bool)
	for _, p := range allPIDs() {
		if st, ppid, _, ok := procStat(p); ok && ppid == pid && st == 'Z' {
			out[p] = true
		}
	}
	return out
}

// groupProcs returns the processes left in process group pgid.
func groupProcs(pgid int) []int {
	var out []int
	for _, p := range allPIDs() {
		if _, _, g, ok := procStat(p); ok && g == pgid {
			out = append(out, p)
		}
	}
	return out
}

// Print writes the report for people.
func (r *Report) Print(w io.Writer, cfg Config) {
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	fmt.Fprintf(w, "soak: %s at %d lines/s, %d-%d workers living %s-%s, %d subscribers\n",
		cfg.Duration, cfg.Rate, cfg.MinWorkers, cfg.Workers, cfg.LifetimeMin, cfg.LifetimeMax, cfg.Subscribers)
	fmt.Fprintf(w, "  lines fed %d; delivered to subscribers %d; lost %d, reordered %d, duplicated %d, unknown %d\n",
		r.LinesFed, r.Deliveries, r.Lost, r.Reordered, r.Duplicated, r.Unknown)
	fmt.Fprintf(w, "  chattyctl: %d sends (%d receipts), %d scales\n", r.Sends, r.SentSeen, r.Scales)
	fmt.Fprintf(w, "  acks good %d, mismatched %d (connections closed with mismatches: %d)\n", r.AcksGood, r.AcksMismatched, r.MismatchedCloses)
	fmt.Fprintf(w, "  workers: %d terminations and %d failed starts logged, %d restarts in status, %d stopped by scale\n",
		r.Terminated, r.StartFailures, r.Restarts, r.Stopped)
	fmt.Fprintf(w, "  idle before/after: fds %d/%d, goroutines %d/%d\n", r.BaseFDs, r.EndFDs, r.BaseGoroutines, r.EndGorout)
	fmt.Fprintf(w, "  resident memory after warm-up: %.1f MiB first window, %.1f MiB last window\n", mib(r.RSSBase), mib(r.RSSEnd))
	var peakFD, peakG int
	var peakRSS int64
	for _, s := range r.Samples {
		peakFD, peakG, peakRSS = max(peakFD, s.FDs), max(peakG, s.Goroutines), max(peakRSS, s.RSS)
	}
	fmt.Fprintf(w, "  peaks under load: rss %.1f MiB, fds %d, goroutines %d\n", mib(peakRSS), peakFD, peakG)
	fmt.Fprintf(w, "  zombies %v, left over %v, exit status %d\n", r.Zombies, r.Leftover, r.ExitCode)
	if r.OK() {
		fmt.Fprintln(w, "  PASS")
		return
	}
	for _, p := range r.Problems {
		fmt.Fprintln(w, "  FAIL:", p)
	}
}
