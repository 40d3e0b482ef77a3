package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/pkg/control"
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
	// RetainBytes is broadcast.retain.bytes. Retained lines are memory
	// that grows until the limit is reached, so the warm-up must fill it
	// (at the default rate 8 MiB take about a minute) for the memory
	// rule to measure leaks rather than retention filling up.
	RetainBytes int64
	Dir         string // for the config, socket and log; a temporary one if empty
	Logf        func(format string, args ...any)
}

// Sample is one measurement of chattyd.
type Sample struct {
	At         time.Duration
	RSS        int64 // bytes
	FDs        int
	Goroutines int
	Workers    int // running, from status
	Clients    int
	Retained   int64 // bytes of the feed retained, from status
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
	// Replay is the pool's slot replay at the end (pool.replay: unacked):
	// a gap is a slot that missed lines, which must not happen within
	// the retention.
	Replay                    control.ReplayCounters
	SlowConsumers             uint64
	BaseFDs, EndFDs           int // idle chattyd before and after the run
	BaseGoroutines, EndGorout int
	RSSBase, RSSEnd           int64 // max over the first and last windows after warm-up
	Zombies                   []int // children seen as zombies in two samples running
	Leftover                  []int // processes of chattyd's group left after it exited
	ExitCode                  int
	Samples                   []Sample
	Problems                  []string
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
	yaml := fmt.Sprintf(`version: 1
broadcast:
  listen: 127.0.0.1:0
  idle_timeout: 60s
  retain:
    bytes: %d
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
`, cfg.RetainBytes, cfg.LifetimeMin, cfg.LifetimeMax)
	d, files, err := chattydproc.StartInDir(cfg.Chattyd, dir, yaml)
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
		return nil, fmt.Errorf("%w; see %s", err, files.Log)
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

	if err := chattyctl(cfg.Chattyctl, files.Socket, "scale", strconv.Itoa(cfg.Workers)); err != nil {
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
			if err := chattyctl(cfg.Chattyctl, files.Socket, "send", "info", fmt.Sprintf("soak message %d", rep.Sends)); err != nil {
				ctlErrs++
				rep.problem("chattyctl send: %v", err)
			}
		case <-scaleT.C:
			n := cfg.MinWorkers + rng.IntN(cfg.Workers-cfg.MinWorkers+1)
			rep.Scales++
			if err := chattyctl(cfg.Chattyctl, files.Socket, "scale", strconv.Itoa(n)); err != nil {
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
			logf("%6s rss %6.1f MiB  retained %5.1f MiB  fds %5d  goroutines %6d  workers %3d  clients %3d  delivered %d",
				s.At.Round(time.Second), float64(s.RSS)/(1<<20), float64(s.Retained)/(1<<20), s.FDs, s.Goroutines, s.Workers, s.Clients, deliveries(subs))
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
	if err := chattyctl(cfg.Chattyctl, files.Socket, "scale", "0"); err != nil {
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
	rep.Replay = full.Pool.ReplayTotals

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
	scanLog(files.Log, rep)
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
	// Slot completeness: every slot's next worker started after the last
	// line its predecessor acknowledged, and none found that line gone.
	if r.Replay.Gaps != 0 {
		r.problem("slot replay: %d workers could not carry on where their slot stopped (%d lines missed)", r.Replay.Gaps, r.Replay.GapLines)
	}
	if r.Terminated > 0 && r.Replay.Resumed == 0 {
		r.problem("slot replay: %d workers ended, and no slot's next worker carried on", r.Terminated)
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

// firstAfter returns the first sample taken after warmUp, or nil.
func (r *Report) firstAfter(warmUp time.Duration) *Sample {
	for i := range r.Samples {
		if r.Samples[i].At >= warmUp {
			return &r.Samples[i]
		}
	}
	return nil
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
	fmt.Fprintf(w, "  slot replay: %d workers identified, %d carried on where their slot stopped, %d gaps (%d lines), %d lines sent again\n",
		r.Replay.Identified, r.Replay.Resumed, r.Replay.Gaps, r.Replay.GapLines, r.Replay.Duplicates)
	fmt.Fprintf(w, "  idle before/after: fds %d/%d, goroutines %d/%d\n", r.BaseFDs, r.EndFDs, r.BaseGoroutines, r.EndGorout)
	fmt.Fprintf(w, "  resident memory after warm-up: %.1f MiB first window, %.1f MiB last window\n", mib(r.RSSBase), mib(r.RSSEnd))
	if first := r.firstAfter(cfg.WarmUp); first != nil && cfg.RetainBytes > 0 {
		fmt.Fprintf(w, "  retained feed: %.1f MiB after warm-up, %.1f MiB at the end, of %.1f MiB (broadcast.retain.bytes)\n",
			mib(first.Retained), mib(r.Samples[len(r.Samples)-1].Retained), mib(cfg.RetainBytes))
		if first.Retained < cfg.RetainBytes*9/10 {
			fmt.Fprintf(w, "  note: retention was still filling after warm-up, so the memory figures include it; use a longer -warm-up or a smaller -retain-bytes\n")
		}
	}
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
