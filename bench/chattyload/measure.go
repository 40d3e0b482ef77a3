package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// result is one run's report. The JSON names are what the bench suite reads.
type result struct {
	Label       string  `json:"label,omitempty"`
	Target      string  `json:"target"`
	Subs        int     `json:"subs"`
	Size        int     `json:"size"`
	Rate        int     `json:"rate"`
	Ack         bool    `json:"ack"`
	Seconds     float64 `json:"seconds"`
	Fed         uint64  `json:"fed"`        // lines fed in the window
	FedPerSec   float64 `json:"fed_per_s"`  // lines fed per second in the window
	Deliveries  uint64  `json:"deliveries"` // lines received by all subscribers in the window
	DeliverRate float64 `json:"deliveries_per_s"`
	LastSeq     uint64  `json:"last_seq"` // lines fed in the whole run
	Lost        uint64  `json:"lost"`     // lines skipped in the stream a subscriber received
	UndrainedN  uint64  `json:"undrained_lines"`
	MissedN     uint64  `json:"disconnected_missed_lines"` // lines after a disconnection // tail lines not received by the drain deadline
	Reordered   uint64  `json:"reordered"`
	Duplicated  uint64  `json:"duplicated"`
	Disconnects int     `json:"disconnected"`
	Undrained   int     `json:"undrained"` // subscribers without the last line at the drain deadline
	Samples     uint64  `json:"latency_samples"`
	P50us       float64 `json:"latency_p50_us"`
	P99us       float64 `json:"latency_p99_us"`
	ServerCPU   float64 `json:"server_cpu_s"`
	ServerNsPer float64 `json:"server_cpu_ns_per_delivery"`
	PeakRSSKiB  int64   `json:"server_peak_rss_kib"`
	// IdleConnBytes is the server's resident memory per subscriber
	// connected and idle: VmRSS once every subscriber is registered
	// minus VmRSS before the first dial, divided by the subscribers.
	IdleConnBytes float64  `json:"server_idle_bytes_per_conn"`
	ToolCPU       float64  `json:"tool_cpu_s"`
	Errors        []string `json:"errors,omitempty"`

	// chattyd-signed only; counts over the whole run, all subscribers.
	Mode        string `json:"mode,omitempty"`             // broadcast.signed.mode
	Checkpoint  string `json:"checkpoint,omitempty"`       // chained: "every N or T"
	SigCache    bool   `json:"sig_cache,omitempty"`        // signatures checked once in the tool
	Verified    uint64 `json:"verified,omitempty"`         // messages delivered as verified
	SigChecks   uint64 `json:"signature_checks,omitempty"` // Ed25519 verifications made
	Checkpoints uint64 `json:"checkpoints,omitempty"`      // checkpoints verified
	Rejected    uint64 `json:"rejected,omitempty"`         // subscribers that rejected the stream
}

func (r *result) human() string {
	mode := "full speed"
	if r.Rate > 0 {
		mode = fmt.Sprintf("%d lines/s", r.Rate)
	}
	if r.Ack {
		mode += ", acking"
	}
	if r.Seconds == 0 {
		return fmt.Sprintf("%s: %d subs, %d B, %s: no measurement\n  error: %s", r.Target, r.Subs, r.Size, mode, strings.Join(r.Errors, "\n  error: "))
	}
	s := fmt.Sprintf("%s: %d subs, %d B, %s: %.0f deliveries/s (fed %.0f lines/s) over %.1fs; lost %d, reordered %d, duplicated %d, disconnected %d; latency p50 %s p99 %s (%d samples); server CPU %.3f µs/delivery, peak RSS %.1f MiB, idle %.0f B/connection; tool CPU %.2fs",
		r.Target, r.Subs, r.Size, mode, r.DeliverRate, r.FedPerSec, r.Seconds,
		r.Lost, r.Reordered, r.Duplicated, r.Disconnects,
		fmtMicros(r.P50us), fmtMicros(r.P99us), r.Samples,
		r.ServerNsPer/1000, float64(r.PeakRSSKiB)/1024, r.IdleConnBytes, r.ToolCPU)
	if r.Mode != "" {
		cache := "every subscriber checks every signature"
		if r.SigCache {
			cache = "signatures checked once, shared cache"
		}
		s += fmt.Sprintf("\n  signed %s%s: %d messages verified in the run, %d checkpoints, %d Ed25519 verifications (%s), %d subscribers rejected the stream",
			r.Mode, r.Checkpoint, r.Verified, r.Checkpoints, r.SigChecks, cache, r.Rejected)
	}
	for _, e := range r.Errors {
		s += "\n  error: " + e
	}
	return s
}

func fmtMicros(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.2fms", us/1000)
	}
	return fmt.Sprintf("%.0fµs", us)
}

// Subscribers connect connectPause apart, and probes check every
// connectBatch of them.
const (
	connectBatch = 50
	connectPause = time.Millisecond
)

// measure runs one whole measurement. It returns a nil result only when
// nothing could be measured.
func measure(ctx context.Context, cfg config) (*result, error) {
	epoch := time.Now()
	raiseNoFile()

	// The hard deadline: whatever hangs, the server dies and the tool exits.
	var tgt atomic.Pointer[target]
	hard := time.Minute + time.Duration(cfg.subs)*10*time.Millisecond + cfg.warmup + cfg.duration + cfg.drain
	watchdog := time.AfterFunc(hard, func() {
		fmt.Fprintf(os.Stderr, "chattyload: hard deadline of %s passed, killing the server and exiting\n", hard)
		if t := tgt.Load(); t != nil {
			_ = syscall.Kill(-t.pid, syscall.SIGKILL)
		}
		os.Exit(3)
	})
	defer watchdog.Stop()

	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	tc := targetConfig{
		name: cfg.target, bin: cfg.bin, config: cfg.srvConfig, extraArgs: cfg.extraArgs,
		subs: cfg.subs, logPath: cfg.serverLog,
	}
	subAddr := addr // where subscribers connect
	var sig *signedSetup
	if cfg.target == "chattyd-signed" {
		sig, err = prepareSigned(cfg.signed, sigCacheSize(cfg))
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(sig.dir)
		tc.name, tc.config, subAddr = "chattyd", sig.config, sig.addr
	}
	ws := cfg.target == "chattyd-ws"
	if ws {
		w, err := prepareWS()
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(w.dir)
		tc.name, tc.config, subAddr = "chattyd", w.config, w.addr
	}
	t, err := startTarget(tc, addr)
	if err != nil {
		return nil, err
	}
	tgt.Store(t)
	defer t.stop(3 * time.Second)

	res := &result{Label: cfg.label, Target: cfg.target, Subs: cfg.subs, Size: cfg.size, Rate: cfg.rate, Ack: cfg.ack, PeakRSSKiB: -1}
	if sig != nil {
		res.Mode, res.SigCache = cfg.signed.mode, cfg.signed.cache
		if cfg.signed.mode == "chained" {
			res.Checkpoint = fmt.Sprintf(", checkpoint every %d or %s", cfg.signed.every, cfg.signed.interval)
		}
	}

	logf := func(format string, args ...any) {
		if cfg.verbose {
			fmt.Fprintf(os.Stderr, "chattyload: %6.2fs "+format+"\n", append([]any{time.Since(epoch).Seconds()}, args...)...)
		}
	}
	logf("started %s on %s, pid %d", cfg.target, addr, t.pid)

	var feedConn net.Conn
	var discard sync.WaitGroup
	if t.feed == nil { // ncat, nats: the feeder is one more client
		feedConn, err = dialRetry(ctx, t, addr, 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("feeder: %w", err)
		}
		defer func() { feedConn.Close(); discard.Wait() }()
		if cfg.target == "nats" {
			pub, err := newNatsPublisher(feedConn.(*net.TCPConn))
			if err != nil {
				return nil, err
			}
			discard.Go(func() { _ = pub.readLoop() })
			t.feed = pub
		} else {
			discard.Go(func() { _, _ = io.Copy(io.Discard, feedConn) })
			t.feed = feedConn.(*net.TCPConn)
		}
	}

	// The latency sampling window, in seqs; empty until the measurement.
	var sampleLo, sampleHi atomic.Uint64
	sampleLo.Store(math.MaxUint64)
	sampleHi.Store(math.MaxUint64)
	window := func() (uint64, uint64) { return sampleLo.Load(), sampleHi.Load() }
	f := newFeeder(t.feed, cfg.size, cfg.rate, epoch)

	// Connect every subscriber before anything is fed, a batch at a time,
	// probing after each batch until the server has registered all so far:
	// ncat listens with a backlog of 10 and accepts in bursts, and
	// overflowing its queue costs a second of SYN retry per connection, so
	// dials are also paced.
	var closing atomic.Bool
	var readers sync.WaitGroup
	subs := make([]*subscriber, 0, cfg.subs)
	defer func() {
		closing.Store(true)
		for _, s := range subs {
			s.conn.Close()
		}
		readers.Wait()
	}()
	probeDeadline := time.Now().Add(15*time.Second + time.Duration(cfg.subs)*10*time.Millisecond)
	rss0 := readRSS(t.pid)
	for len(subs) < cfg.subs {
		for range min(connectBatch, cfg.subs-len(subs)) {
			c, err := dialRetry(ctx, t, subAddr, 10*time.Second)
			if err != nil {
				return nil, fmt.Errorf("subscriber %d: %w", len(subs), err)
			}
			if sig != nil {
				c = sig.wrap(c, cfg.ack, cfg.bufSize)
			}
			if ws {
				if c, err = wsHandshake(c, cfg.bufSize); err != nil {
					return nil, fmt.Errorf("subscriber %d: %w", len(subs), err)
				}
			}
			if cfg.target == "nats" {
				nc, err := dialNatsSub(c.(*net.TCPConn))
				if err != nil {
					c.Close()
					return nil, fmt.Errorf("subscriber %d: %w", len(subs), err)
				}
				c = nc
			}
			s := &subscriber{id: len(subs), conn: c, buf: make([]byte, cfg.bufSize)}
			// A signed subscriber acks by sequence number in its connection.
			s.st = stream{tracker: newTracker(), ack: cfg.ack && sig == nil, sampleMod: cfg.sampleMod, hist: new(histogram)}
			subs = append(subs, s)
			readers.Go(func() { s.read(&closing, window, f.nanos) })
			if err := sleepCtx(ctx, connectPause); err != nil {
				return nil, err
			}
		}
		if err := probe(ctx, t, f, subs, probeDeadline); err != nil {
			return nil, err
		}
	}
	if rss1 := readRSS(t.pid); rss0 > 0 && rss1 > 0 {
		res.IdleConnBytes = float64(rss1-rss0) * 1024 / float64(len(subs))
	}
	f.window = cfg.window
	f.slowest = func() uint64 { return slowest(subs) }

	feedErr := make(chan error, 1)
	go func() { feedErr <- f.run() }() // owned here: stopFeeder receives feedErr
	stopFeeder := func() error {
		f.stop.Store(true)
		select {
		case err := <-feedErr:
			return err
		case <-time.After(2 * time.Second):
		}
		_ = t.feed.SetWriteDeadline(time.Now()) // the server stopped reading
		select {
		case err := <-feedErr:
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("the server stopped reading the feed: %w", err)
			}
			return err
		case <-time.After(5 * time.Second):
			return errors.New("feeder stuck in write")
		}
	}
	feederStopped := false
	defer func() {
		if !feederStopped {
			_ = stopFeeder()
		}
	}()

	logf("%d subscribers registered, feeding; warm-up %s", len(subs), cfg.warmup)
	if err := sleepCtx(ctx, cfg.warmup); err != nil {
		return nil, err
	}

	// The measured window.
	fed0 := f.fed.Load()
	sampleLo.Store(fed0 + 1)
	pid := t.pid
	ps0, err := readProcStat(pid)
	if err != nil {
		return nil, fmt.Errorf("server stats: %w (did it exit?)", err)
	}
	tool0 := selfCPU()
	del0 := sumReceived(subs)
	t0 := time.Now()
	end := t0.Add(cfg.duration)
	for time.Now().Before(end) && (cfg.lines == 0 || f.fed.Load()-fed0 < cfg.lines) {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
		if done, err := t.exited(); done {
			return nil, fmt.Errorf("server exited during the measurement: %v", err)
		}
		if allEnded(subs) {
			break // reported below as disconnections
		}
	}
	ps1, err := readProcStat(pid)
	del1 := sumReceived(subs)
	t1 := time.Now()
	tool1 := selfCPU()
	fed1 := f.fed.Load()
	sampleHi.Store(fed1)
	if err != nil {
		return nil, fmt.Errorf("server stats: %w (did it exit?)", err)
	}

	logf("window done: fed %d lines, received %d", fed1-fed0, del1-del0)
	feederStopped = true
	if err := stopFeeder(); err != nil {
		res.Errors = append(res.Errors, "feeder: "+err.Error())
	}
	last := f.fed.Load()

	// Drain: every subscriber should get every line fed.
	logf("feeder stopped at line %d, draining", last)
	deadline := time.Now().Add(cfg.drain)
	for !drained(subs, last) && time.Now().Before(deadline) {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if ps, err := readProcStat(pid); err == nil {
		res.PeakRSSKiB = ps.peakRSS
	}
	if done, err := t.exited(); done {
		res.Errors = append(res.Errors, fmt.Sprintf("server exited before the end: %v", err))
	}

	// Stop the readers, then account.
	logf("drained (slowest subscriber at line %d), closing", slowest(subs))
	closing.Store(true)
	for _, s := range subs {
		s.conn.Close()
	}
	readers.Wait()

	secs := t1.Sub(t0).Seconds()
	res.Seconds = secs
	res.Fed = fed1 - fed0
	res.FedPerSec = float64(res.Fed) / secs
	res.Deliveries = del1 - del0
	res.DeliverRate = float64(res.Deliveries) / secs
	res.LastSeq = last
	res.ServerCPU = (ps1.cpu - ps0.cpu).Seconds()
	if res.Deliveries > 0 {
		res.ServerNsPer = float64(ps1.cpu-ps0.cpu) / float64(res.Deliveries)
	}
	res.ToolCPU = (tool1 - tool0).Seconds()
	var h histogram
	var firstErr error
	for _, s := range subs {
		res.Reordered += s.st.reordered
		res.Duplicated += s.st.duplicated
		switch {
		case s.err != nil:
			res.Lost += s.st.lost
			res.MissedN += s.st.lostBy(last) - s.st.lost
			res.Disconnects++
			if firstErr == nil {
				firstErr = s.err
			}
		case s.st.next <= last: // still connected: late, maybe not lost
			res.Lost += s.st.lost
			res.Undrained++
			res.UndrainedN += s.st.lostBy(last) - s.st.lost
		default:
			res.Lost += s.st.lost
		}
		h.merge(s.st.hist)
	}
	res.Samples = h.total
	res.P50us = float64(h.quantile(0.50)) / 1000
	res.P99us = float64(h.quantile(0.99)) / 1000
	if res.Disconnects > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d of %d subscribers disconnected (missing %d lines fed after), first: %v", res.Disconnects, cfg.subs, res.MissedN, firstErr))
	}
	if res.Undrained > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d subscribers still missed %d lines up to line %d %s after feeding stopped", res.Undrained, res.UndrainedN, last, cfg.drain))
	}
	if res.Lost+res.Reordered+res.Duplicated > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("delivery broken: %d lost, %d reordered, %d duplicated", res.Lost, res.Reordered, res.Duplicated))
	}
	if sig != nil {
		n := countSigned(subs, sig.cache)
		res.Verified, res.SigChecks, res.Checkpoints, res.Rejected = n.verified, n.checks, n.checkpoints, n.rejected
		if n.rejected > 0 {
			res.Errors = append(res.Errors, fmt.Sprintf("%d of %d subscribers rejected the signed stream (see the disconnection above)", n.rejected, cfg.subs))
		}
	}
	return res, nil
}

// sigCacheSize is how many signatures the shared cache holds: at full
// speed subscribers are at most -window lines apart, and each connection
// has its own ANCHOR.
func sigCacheSize(cfg config) int {
	return int(min(2*cfg.window, 1<<20)) + cfg.subs + 1024
}

// probe writes probe lines until every subscriber has received one.
func probe(ctx context.Context, t *target, f *feeder, subs []*subscriber, deadline time.Time) error {
	for n := 1; ; n++ {
		if err := f.probe(n); err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		// A subscriber registered just after a probe went out needs the next.
		for range 25 {
			if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
				return err
			}
			waiting := 0
			for _, s := range subs {
				if s.ended.Load() {
					return fmt.Errorf("subscriber %d disconnected before the start: %v", s.id, s.err)
				}
				if !s.probed.Load() {
					waiting++
				}
			}
			if waiting == 0 {
				return nil
			}
			if done, err := t.exited(); done {
				return fmt.Errorf("server exited at start: %v", err)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d of %d subscribers not registered by the server in time", waiting, len(subs))
			}
		}
	}
}

// slowest returns the last in-order seq of the slowest connected subscriber.
func slowest(subs []*subscriber) uint64 {
	low := uint64(math.MaxUint64)
	for _, s := range subs {
		if !s.ended.Load() {
			low = min(low, s.next.Load()-1)
		}
	}
	return low
}

func allEnded(subs []*subscriber) bool {
	for _, s := range subs {
		if !s.ended.Load() {
			return false
		}
	}
	return true
}

func drained(subs []*subscriber, last uint64) bool {
	for _, s := range subs {
		if !s.ended.Load() && s.next.Load() <= last {
			return false
		}
	}
	return true
}

func sumReceived(subs []*subscriber) uint64 {
	var n uint64
	for _, s := range subs {
		n += s.received.Load()
	}
	return n
}

// dialRetry connects to addr until the server listens, it dies, or limit.
func dialRetry(ctx context.Context, t *target, addr string, limit time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(limit)
	d := net.Dialer{Timeout: limit} // a full accept queue delays, not refuses
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		if done, werr := t.exited(); done {
			return nil, fmt.Errorf("server exited at start (%v); its log may say why", werr)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("connect %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeAddr returns a 127.0.0.1 address with a port free right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// raiseNoFile lifts the soft open-file limit to the hard one, for the tool
// and, because it is set explicitly, for the server it starts.
func raiseNoFile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	rl.Cur = rl.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
