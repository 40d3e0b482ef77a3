// Command natsbench measures chattyd's shared feed through NATS JetStream
// (make bench-nats, docs/benchmarks.md): it starts a three-node
// nats-server cluster on loopback with an R3 file stream, then measures
// publishing into the stream (batched and not), the fan-out of a chattyd
// fed through the stream against one fed from stdin, the latency of both
// at a steady rate, and the stall when the stream leader is killed.
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
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/demofeed"
	"github.com/chatty-dev/chatty/internal/natsfeed"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/procstat"
	"github.com/chatty-dev/chatty/test/natscluster"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

func main() {
	bin := flag.String("bin", "bin/chattyd", "chattyd binary")
	jsonOut := flag.String("json", "", "write the results as JSON to this file")
	lines := flag.Int("lines", 500000, "lines published in the publishing run (a twentieth of them one per message)")
	flag.IntVar(&fanoutLines, "fanout-lines", 2000000, "lines fed in each fan-out run")
	subs := flag.Int("subs", 100, "subscribers of the fan-out run")
	only := flag.String("only", "publish,fanout,latency,stall", "the measures to run, comma-separated")
	flag.IntVar(&fanoutRounds, "fanout-rounds", 3, "fan-out runs on each side, direct and through NATS alternating")
	heartbeat := flag.Duration("heartbeat", 2*time.Second, "nats.consume.heartbeat of the chattyd fed through the stream")
	flag.IntVar(&batchLines, "batch-lines", config.Default().NATS.Publish.BatchLines, "nats.publish.batch_lines of the batched publishing run")
	flag.IntVar(&batchBytes, "batch-bytes", config.Default().NATS.Publish.BatchBytes, "nats.publish.batch_bytes of the batched publishing run")
	flag.IntVar(&fanoutBatchBytes, "fanout-batch-bytes", 0, "nats.publish.batch_bytes of the chattyd fed through the stream in the fan-out runs; 0 is chattyd's default")
	flag.StringVar(&lineKind, "line", "demo", "the lines fed: demo (the demo feed's, a timestamp and the Base64 of 1 to 32 random bytes, 45 bytes on average) or x (63 x's, which S2 compresses to almost nothing)")
	flag.StringVar(&clusterCPUs, "cluster-cpus", "", "CPUs (a taskset -c list, such as 1) of the three nats-servers; this tool, its subscribers and chattyd then run on the others, as if the cluster were on machines of its own. Empty: every process on any CPU, as the targets are measured")
	flag.StringVar(&edgeNode, "edge-node", "any", "the node the chattyd fed through the stream connects to: any (the three URLs; nats.go picks one), leader (the stream leader's), follower (another's)")
	flag.Parse()
	if lineKind != "demo" && lineKind != "x" {
		fmt.Fprintf(os.Stderr, "natsbench: -line must be demo or x, got %q\n", lineKind)
		os.Exit(2)
	}
	if edgeNode != "any" && edgeNode != "leader" && edgeNode != "follower" {
		fmt.Fprintf(os.Stderr, "natsbench: -edge-node must be any, leader or follower, got %q\n", edgeNode)
		os.Exit(2)
	}
	if fanoutRounds < 1 {
		fmt.Fprintln(os.Stderr, "natsbench: -fanout-rounds must be at least 1")
		os.Exit(2)
	}
	for _, o := range strings.Split(*only, ",") {
		runOnly[o] = true
	}
	consumeHeartbeat = *heartbeat
	if clusterCPUs != "" {
		if err := pinAwayFrom(clusterCPUs); err != nil {
			fmt.Fprintf(os.Stderr, "natsbench: -cluster-cpus %s: %v\n", clusterCPUs, err)
			os.Exit(2)
		}
	}
	m := &natscluster.Main{}
	defer m.Close()
	r, err := run(m, *bin, *lines, *subs)
	if err != nil {
		m.Errorf("natsbench: %v", err)
		m.Close()
		os.Exit(1)
	}
	out, _ := json.MarshalIndent(r, "", "  ")
	fmt.Println(string(out))
	if *jsonOut != "" {
		if err := os.WriteFile(*jsonOut, out, 0o644); err != nil {
			m.Fatal(err)
		}
	}
}

// newline is what a subscriber counts. bytes.Count of one byte is
// vectorised: a loop over every byte would take CPU from chattyd and the
// servers on a machine the subscribers already share with them.
var newline = []byte{'\n'}

var (
	runOnly                = map[string]bool{}
	clusterCPUs            string
	edgeNode               string
	lineKind               string
	consumeHeartbeat       time.Duration
	fanoutRounds           int
	fanoutLines            int
	fanoutBatchBytes       int
	batchLines, batchBytes int
)

// results are what natsbench measured.
type results struct {
	PublishBatchedLinesPerSec   float64   `json:"publish_batched_lines_per_s"`
	PublishUnbatchedLinesPerSec float64   `json:"publish_unbatched_lines_per_s"`
	FanoutDirectDeliveriesPerS  float64   `json:"fanout_direct_deliveries_per_s"`
	FanoutNATSDeliveriesPerS    float64   `json:"fanout_nats_deliveries_per_s"`
	FanoutRatio                 float64   `json:"fanout_nats_over_direct"`
	FanoutDirectRuns            []float64 `json:"fanout_direct_runs"`
	FanoutNATSRuns              []float64 `json:"fanout_nats_runs"`
	// CPU seconds over the fan-out runs (means): chattyd's own, and the
	// three nats-server processes' together.
	FanoutDirectChattydCPUs float64 `json:"fanout_direct_chattyd_cpu_s"`
	FanoutNATSChattydCPUs   float64 `json:"fanout_nats_chattyd_cpu_s"`
	FanoutDirectServersCPUs float64 `json:"fanout_direct_nats_servers_cpu_s"`
	FanoutNATSServersCPUs   float64 `json:"fanout_nats_nats_servers_cpu_s"`
	FanoutDirectToolCPUs    float64 `json:"fanout_direct_tool_cpu_s"`
	FanoutNATSToolCPUs      float64 `json:"fanout_nats_tool_cpu_s"`
	LatencyDirectP99Ms      float64 `json:"latency_direct_p99_ms"`
	LatencyNATSP99Ms        float64 `json:"latency_nats_p99_ms"`
	LatencyDirectP50Ms      float64 `json:"latency_direct_p50_ms"`
	LatencyNATSP50Ms        float64 `json:"latency_nats_p50_ms"`
	LeaderKillStallMs       float64 `json:"leader_kill_stall_ms"`
	LeaderKillLost          int     `json:"leader_kill_lost_lines"`
	ClusterCPUs             string  `json:"cluster_cpus,omitempty"`
	Subs                    int     `json:"subs"`
	Lines                   int     `json:"lines"`
	FanoutLines             int     `json:"fanout_lines"`
}

func run(m *natscluster.Main, bin string, nLines, nSubs int) (results, error) {
	r := results{Subs: nSubs, Lines: nLines, FanoutLines: fanoutLines, ClusterCPUs: clusterCPUs}
	c := natscluster.StartOn(m, clusterCPUs)
	log := logrus.New()
	log.SetOutput(io.Discard)
	entry := logrus.NewEntry(log)
	cfg := config.Default().NATS
	cfg.URLs = c.URLList()
	stream := config.Default().NATS.Stream
	stream.Name, stream.Subjects, stream.Replicas = "BENCH", []string{"bench.feed"}, 3
	conn, err := natsfeed.Connect(cfg, natsfeed.ConnOptions{Name: "natsbench", AckTimeout: 5 * time.Second, Window: 256}, entry)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	st, err := natsfeed.EnsureStream(ctx, conn.JS, stream, entry)
	cancel()
	if err != nil {
		return r, err
	}
	feed, lines := makeFeed(max(nLines, fanoutLines))
	fanoutBytes := 0 // of the first fanoutLines lines
	for _, l := range lines[:fanoutLines] {
		fanoutBytes += len(l) + 1
	}
	publish := func(batch, n int) (float64, error) {
		p := natsfeed.NewPublisher(conn.JS, st, natsfeed.PublisherOptions{
			Subject: "bench.feed", Window: 256, BufferBytes: 64 << 20, BatchLines: batch, BatchBytes: batchBytes,
		}, entry)
		pctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); p.Run(pctx) }()
		defer func() { stop(); <-done }()
		start := time.Now()
		for i := 0; i < n; i += 256 {
			if err := p.Publish(context.Background(), lines[i:min(i+256, n)]); err != nil {
				return 0, err
			}
		}
		if err := poll.Until(context.Background(), 5*time.Minute, func() bool { return p.Stats().Lines == uint64(n) }); err != nil {
			return 0, fmt.Errorf("publishing: %w (%+v)", err, p.Stats())
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	if runOnly["publish"] {
		if r.PublishBatchedLinesPerSec, err = publish(batchLines, nLines); err != nil {
			return r, err
		}
		m.Logf("publish batched: %.0f lines/s", r.PublishBatchedLinesPerSec)
		if r.PublishUnbatchedLinesPerSec, err = publish(1, nLines/20); err != nil {
			return r, err
		}
		m.Logf("publish unbatched: %.0f lines/s", r.PublishUnbatchedLinesPerSec)
	}

	urls := c.URLList()
	if edgeNode != "any" {
		var leader string
		err := poll.Until(context.Background(), 30*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			info, err := st.Info(ctx)
			if err == nil && info.Cluster != nil {
				leader = info.Cluster.Leader
			}
			return leader != ""
		})
		if err != nil {
			return r, fmt.Errorf("the stream has no leader: %w", err)
		}
		urls = nil
		for _, n := range c.Nodes {
			if (n.Name == leader) == (edgeNode == "leader") {
				urls = append(urls, "nats://"+n.ClientAddr)
			}
		}
		urls = urls[:1]
		m.Logf("edge-node %s: the stream leader is %s; chattyd connects to %s", edgeNode, leader, urls[0])
	}
	batchYAML := ""
	if fanoutBatchBytes > 0 {
		batchYAML = fmt.Sprintf("    batch_bytes: %d\n", fanoutBatchBytes)
	}
	natsYAML := fmt.Sprintf("nats:\n  urls: [%s]\n  stream:\n    name: BENCH\n    subjects: [bench.feed]\n    replicas: 3\n  publish:\n    window: 256\n%s  consume:\n    heartbeat: %s\n", strings.Join(urls, ", "), batchYAML, consumeHeartbeat)

	// Fan-out: the same feed from stdin, direct and through the stream.
	// serversCPU is the CPU time of the cluster's processes so far.
	serversCPU := func() time.Duration {
		var sum time.Duration
		for _, n := range c.Nodes {
			sum += cpuTime(n.Pid())
		}
		return sum
	}
	// tool is this process: the subscribers, and the writer of the feed.
	type cpu struct{ chattyd, servers, tool time.Duration }
	add := func(sum *cpu, c cpu) { sum.chattyd += c.chattyd; sum.servers += c.servers; sum.tool += c.tool }
	fanout := func(extra string) (float64, cpu, error) {
		var used cpu
		d, err := startChattyd(m, bin, extra)
		if err != nil {
			return 0, used, err
		}
		defer d.stop()
		counts := make([]atomic.Int64, nSubs)
		var wg sync.WaitGroup
		conns := make([]net.Conn, nSubs)
		for i := range nSubs {
			if conns[i], err = net.Dial("tcp", d.addr); err != nil {
				return 0, used, err
			}
			defer conns[i].Close()
		}
		if err := d.waitClients(nSubs); err != nil {
			return 0, used, err
		}
		for i := range nSubs {
			wg.Go(func() {
				buf := make([]byte, 256<<10)
				var n int64
				for n < int64(fanoutLines) {
					k, err := conns[i].Read(buf)
					n += int64(bytes.Count(buf[:k], newline))
					counts[i].Store(n)
					if err != nil {
						return
					}
				}
			})
		}
		chattydAt, serversAt, toolAt := cpuTime(d.cmd.Process.Pid), serversCPU(), cpuTime(os.Getpid())
		start := time.Now()
		go func() {
			for data := feed[:fanoutBytes]; len(data) > 0; {
				k, err := d.stdin.Write(data[:min(len(data), 1<<20)])
				if err != nil {
					return
				}
				data = data[k:]
			}
		}()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			return 0, used, errors.New("fan-out: not every line reached every subscriber within 5 minutes")
		}
		for i := range counts {
			if counts[i].Load() != int64(fanoutLines) {
				return 0, used, fmt.Errorf("fan-out: subscriber %d got %d lines, want %d", i, counts[i].Load(), fanoutLines)
			}
		}
		elapsed := time.Since(start)
		used = cpu{chattyd: cpuTime(d.cmd.Process.Pid) - chattydAt, servers: serversCPU() - serversAt, tool: cpuTime(os.Getpid()) - toolAt}
		return float64(fanoutLines*nSubs) / elapsed.Seconds(), used, nil
	}
	if runOnly["fanout"] {
		// Direct and through NATS in the order D N N D D N ...: on a
		// machine whose speed drifts, each side gets as many early runs
		// as late ones, and the ratio of the means is that of the sides.
		var direct, viaNATS []float64
		var directCPU, natsCPU cpu
		for i := range 2 * fanoutRounds {
			nats := i%4 == 1 || i%4 == 2
			extra := ""
			if nats {
				extra = natsYAML
			}
			v, used, err := fanout(extra)
			if err != nil {
				return r, err
			}
			if nats {
				viaNATS = append(viaNATS, v)
				add(&natsCPU, used)
			} else {
				direct = append(direct, v)
				add(&directCPU, used)
			}
			m.Logf("fan-out to %d subs, run %d, through NATS %v: %.0f deliveries/s; CPU chattyd %v, nats-servers %v, this tool (subscribers, feed writer) %v", nSubs, i+1, nats, v, used.chattyd, used.servers, used.tool)
		}
		runs := float64(fanoutRounds)
		r.FanoutDirectChattydCPUs, r.FanoutDirectServersCPUs = directCPU.chattyd.Seconds()/runs, directCPU.servers.Seconds()/runs
		r.FanoutNATSChattydCPUs, r.FanoutNATSServersCPUs = natsCPU.chattyd.Seconds()/runs, natsCPU.servers.Seconds()/runs
		r.FanoutDirectToolCPUs, r.FanoutNATSToolCPUs = directCPU.tool.Seconds()/runs, natsCPU.tool.Seconds()/runs
		r.FanoutDirectRuns, r.FanoutNATSRuns = direct, viaNATS
		r.FanoutDirectDeliveriesPerS, r.FanoutNATSDeliveriesPerS = mean(direct), mean(viaNATS)
		r.FanoutRatio = r.FanoutNATSDeliveriesPerS / r.FanoutDirectDeliveriesPerS
		m.Logf("fan-out to %d subs: direct %.0f, through NATS %.0f deliveries/s (%.2f)", nSubs, r.FanoutDirectDeliveriesPerS, r.FanoutNATSDeliveriesPerS, r.FanoutRatio)
	}

	// Latency at 1,000 lines/s, 10 subscribers, 10 s each.
	latency := func(extra string) (p50, p99 float64, err error) {
		lat, _, err := steady(m, bin, extra, 10, 10*time.Second, nil)
		if err != nil {
			return 0, 0, err
		}
		slices.Sort(lat)
		return ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]), nil
	}
	if runOnly["latency"] {
		if r.LatencyDirectP50Ms, r.LatencyDirectP99Ms, err = latency(""); err != nil {
			return r, err
		}
		if r.LatencyNATSP50Ms, r.LatencyNATSP99Ms, err = latency(natsYAML); err != nil {
			return r, err
		}
		m.Logf("latency p50/p99 at 1000 lines/s: direct %.2f/%.2f ms, through NATS %.2f/%.2f ms", r.LatencyDirectP50Ms, r.LatencyDirectP99Ms, r.LatencyNATSP50Ms, r.LatencyNATSP99Ms)
	}

	// The stream leader killed at 1,000 lines/s: the longest time without
	// a line, and lines lost.
	kill := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil {
			m.Errorf("stream info before the kill: %v", err)
			return
		}
		n := c.Node(info.Cluster.Leader)
		m.Logf("killing the stream leader %s", n.Name)
		n.Kill()
		go func() { time.Sleep(5 * time.Second); n.Start() }()
	}
	if runOnly["stall"] {
		_, stall, err := steady(m, bin, natsYAML, 1, 15*time.Second, kill)
		if err != nil {
			return r, err
		}
		r.LeaderKillStallMs = ms(stall.longest)
		r.LeaderKillLost = stall.lost
		m.Logf("leader killed: longest stall %.0f ms, %d lines lost", r.LeaderKillStallMs, r.LeaderKillLost)
	}
	return r, nil
}

func mean(v []float64) float64 {
	var sum float64
	for _, x := range v {
		sum += x
	}
	return sum / float64(len(v))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type stallResult struct {
	longest time.Duration
	lost    int
}

// steady feeds a chattyd 1,000 stamped lines/s for dur with subs
// subscribers, calling fault (if not nil) a third of the way in; it
// returns every delivery's latency and the longest time the first
// subscriber went without a line.
func steady(m *natscluster.Main, bin, extra string, subs int, dur time.Duration, fault func()) ([]time.Duration, stallResult, error) {
	d, err := startChattyd(m, bin, extra)
	if err != nil {
		return nil, stallResult{}, err
	}
	defer d.stop()
	const rate = 1000
	n := int(dur.Seconds()) * rate
	var mu sync.Mutex
	var lat []time.Duration
	var stall stallResult
	var wg sync.WaitGroup
	conns := make([]net.Conn, subs)
	for i := range subs {
		if conns[i], err = net.Dial("tcp", d.addr); err != nil {
			return nil, stall, err
		}
		defer conns[i].Close()
	}
	if err := d.waitClients(subs); err != nil {
		return nil, stall, err
	}
	for i := range subs {
		wg.Go(func() {
			conns[i].SetReadDeadline(time.Now().Add(dur + 60*time.Second))
			sc := bufio.NewScanner(conns[i])
			got, last := 0, time.Time{}
			var mine []time.Duration
			for got < n && sc.Scan() {
				now := time.Now()
				f := strings.Fields(sc.Text())
				if len(f) < 2 {
					continue
				}
				sent, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					continue
				}
				mine = append(mine, now.Sub(time.Unix(0, sent)))
				if i == 0 && !last.IsZero() {
					stall.longest = max(stall.longest, now.Sub(last))
				}
				last = now
				got++
			}
			mu.Lock()
			lat = append(lat, mine...)
			if i == 0 {
				stall.lost = n - got
			}
			mu.Unlock()
		})
	}
	start := time.Now()
	for i := range n {
		if w := time.Until(start.Add(time.Duration(i) * time.Second / rate)); w > 0 {
			time.Sleep(w)
		}
		if fault != nil && i == n/3 {
			go fault()
		}
		fmt.Fprintf(d.stdin, "%09d %d padding-padding-padding\n", i, time.Now().UnixNano())
	}
	wg.Wait()
	return lat, stall, nil
}

// chattyd is a chattyd process of the benchmark.
type chattyd struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	addr   string
	socket string
	bin    string
}

func startChattyd(m *natscluster.Main, bin, extra string) (*chattyd, error) {
	dir := m.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	sock := filepath.Join(dir, "control.sock")
	conf := fmt.Sprintf("version: 1\npool:\n  size: 0\nbroadcast:\n  listen: %s\ncontrol:\n  socket: %s\nlog:\n  level: warning\n%s", addr, sock, extra)
	path := filepath.Join(dir, "chattyd.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", path)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &chattyd{cmd: cmd, stdin: stdin, addr: addr, socket: sock, bin: bin}
	err = poll.Until(context.Background(), 90*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err != nil {
		d.stop()
		return nil, fmt.Errorf("chattyd does not listen on %s: %w", addr, err)
	}
	return d, nil
}

// waitClients waits until chattyd reports n clients connected.
func (d *chattyd) waitClients(n int) error {
	return poll.Until(context.Background(), 30*time.Second, func() bool {
		out, err := exec.Command(filepath.Join(filepath.Dir(d.bin), "chattyctl"), "--socket", d.socket, "status", "--json").Output()
		if err != nil {
			return false
		}
		var st struct {
			Clients struct {
				Connected int `json:"connected"`
			} `json:"clients"`
		}
		return json.Unmarshal(out, &st) == nil && st.Clients.Connected >= n
	})
}

func (d *chattyd) stop() {
	d.stdin.Close()
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// makeFeed returns n lines of the kind -line names, each with its "\n",
// in one buffer, and the lines without their "\n" as slices of it. The
// demo lines are made once, before any clock starts, from a fixed seed:
// every run is fed the same bytes.
func makeFeed(n int) (feed []byte, lines [][]byte) {
	rng := rand.New(rand.NewPCG(1, 2))
	at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	lines = make([][]byte, 0, n)
	for i := range n {
		start := len(feed)
		if lineKind == "x" {
			feed = append(feed, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"...)
		} else {
			feed = demofeed.AppendLine(feed, at.Add(time.Duration(i)*time.Millisecond), rng)
		}
		lines = append(lines, feed[start:len(feed)-1:len(feed)-1])
	}
	return feed, lines
}

// cpuTime returns the CPU time process pid has used; 0 when it cannot be
// read (a node not running has pid 0, which /proc has not).
func cpuTime(pid int) time.Duration {
	d, _ := procstat.CPU(pid)
	return d
}

// pinAwayFrom runs every thread of this process, and so every process it
// starts after, on the CPUs it may use now other than those of list (a
// taskset -c list). It fails when list names a CPU this process may not
// use, or leaves none.
func pinAwayFrom(list string) error {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return err
	}
	cpus, err := parseCPUList(list)
	if err != nil {
		return err
	}
	for _, cpu := range cpus {
		if !set.IsSet(cpu) {
			return fmt.Errorf("CPU %d is not one this process may run on", cpu)
		}
		set.Clear(cpu)
	}
	if set.Count() == 0 {
		return errors.New("no CPU would be left for chattyd and the subscribers")
	}
	// A thread started meanwhile inherits the mask of the one that made
	// it, which may not be set yet: go round until a pass finds every
	// thread already set.
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		changed := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			var has unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &has); err == nil && has == set {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
			changed = true
		}
		if !changed {
			return nil
		}
	}
}

// parseCPUList returns the CPUs of a taskset -c list: numbers and
// ranges (lo-hi), comma-separated.
func parseCPUList(list string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= 1024 {
			return nil, fmt.Errorf("not a list of CPUs: %q", part)
		}
		for cpu := a; cpu <= b; cpu++ {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}
