// Command suite runs chatty's benchmark scenarios with chattyload, each
// against chattyd, ncat --broker and nats-server in the same run: fan-out
// to 10, 100, 1000 and 10,000 subscribers at full speed, with acks, and at
// a fixed rate for latency. It prints a Markdown table with the ratios of
// chattyd to the others. `make bench` runs it through bench/run.sh.
//
//	suite -chattyload bin/chattyload -chattyd bin/chattyd -duration 5s
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// result is the part of chattyload's JSON report the table uses.
type result struct {
	Target      string   `json:"target"`
	DeliverRate float64  `json:"deliveries_per_s"`
	FedPerSec   float64  `json:"fed_per_s"`
	Lost        uint64   `json:"lost"`
	Reordered   uint64   `json:"reordered"`
	Duplicated  uint64   `json:"duplicated"`
	Disconnects int      `json:"disconnected"`
	UndrainedN  uint64   `json:"undrained_lines"`
	Samples     uint64   `json:"latency_samples"`
	P50us       float64  `json:"latency_p50_us"`
	P99us       float64  `json:"latency_p99_us"`
	ServerNsPer float64  `json:"server_cpu_ns_per_delivery"`
	PeakRSSKiB  int64    `json:"server_peak_rss_kib"`
	ToolCPU     float64  `json:"tool_cpu_s"`
	Errors      []string `json:"errors"`

	// For the websocket table.
	IdleConnBytes float64 `json:"server_idle_bytes_per_conn"`

	// For the signed table.
	Subs      int     `json:"subs"`
	Rate      int     `json:"rate"`
	Seconds   float64 `json:"seconds"`
	ServerCPU float64 `json:"server_cpu_s"`
	Mode      string  `json:"mode"`
	Verified  uint64  `json:"verified"`
	SigChecks uint64  `json:"signature_checks"`
}

// scenario is one line of the benchmark plan.
type scenario struct {
	name    string
	title   string
	args    []string
	targets []string
	rows    []row
}

// row is one measure of a scenario in the table.
type row struct {
	measure string
	value   func(r *result) float64
	format  func(v float64) string
}

var (
	deliveries = row{measure: "deliveries/s", value: func(r *result) float64 { return r.DeliverRate }, format: fmtCount}
	lost       = row{measure: "lines lost", value: func(r *result) float64 { return float64(r.Lost) }, format: fmtInt}
	cpuPer     = row{measure: "server CPU µs/delivery", value: func(r *result) float64 { return r.ServerNsPer / 1000 }, format: fmtMicros}
	rss        = row{measure: "server peak RSS MiB", value: func(r *result) float64 { return float64(r.PeakRSSKiB) / 1024 }, format: fmtFloat1}
	p50        = row{measure: "latency p50 ms", value: func(r *result) float64 { return r.P50us / 1000 }, format: fmtMillis}
	p99        = row{measure: "latency p99 ms", value: func(r *result) float64 { return r.P99us / 1000 }, format: fmtMillis}
)

// targets are the servers compared, in the table's column order.
var targets = []struct{ name, title string }{
	{"chattyd", "chattyd"},
	{"ncat", "ncat --broker"},
	{"nats", "nats-server"},
}

// fanoutSizes are the numbers of subscribers of the fan-out scenarios.
var fanoutSizes = []int{10, 100, 1000, 10000}

// latencyDeliveries is the deliveries per second of the fixed-rate runs:
// the rate is this divided by the subscribers, so that every size asks
// the same work of the server (10 subscribers get 10,000 lines/s, 10,000
// get 10 lines/s) and the latency measures the server, not a saturated
// machine.
const latencyDeliveries = 100000

func plan() []scenario {
	all := []string{"chattyd", "ncat", "nats"}
	noNcat := []string{"chattyd", "nats"}
	var out []scenario
	for _, n := range fanoutSizes {
		subs := strconv.Itoa(n)
		rate := latencyDeliveries / n
		// At full speed the feeder stays at most this many lines ahead of
		// the slowest subscriber: 4096 up to 100 subscribers, fewer above,
		// so that the backlog to drain (window times subscribers) stays
		// about the same at every size.
		window := strconv.Itoa(min(4096, max(32, 409600/n)))
		out = append(out,
			scenario{name: "full-" + subs, title: subs + " subs, 64 B lines, full speed", args: []string{"-subs", subs, "-window", window},
				targets: all, rows: []row{deliveries, lost, cpuPer, rss}},
			scenario{name: "ack-" + subs, title: subs + " subs acking every line, full speed", args: []string{"-subs", subs, "-ack", "-window", window},
				targets: noNcat, rows: []row{deliveries, lost, cpuPer, rss}},
			scenario{name: "rate-" + subs, title: fmt.Sprintf("%s subs, %d lines/s", subs, rate), args: []string{"-subs", subs, "-rate", strconv.Itoa(rate)},
				targets: all, rows: []row{p50, p99, lost, cpuPer, rss}},
		)
	}
	return out
}

func main() {
	os.Exit(run())
}

func run() int {
	load := flag.String("chattyload", "bin/chattyload", "chattyload binary")
	chattyd := flag.String("chattyd", "bin/chattyd", "chattyd binary; when empty or missing, its column says not measured")
	duration := flag.Duration("duration", 5*time.Second, "measured window of each run")
	warmup := flag.Duration("warmup", time.Second, "warm-up of each run")
	out := flag.String("out", "bench/results", "directory for the JSON reports and server logs")
	only := flag.String("only", "", "comma-separated scenarios to run (full-N, ack-N, rate-N for N = 10, 100, 1000, 10000; "+strings.Join(signedNames(), ", ")+", websocket)")
	natsBin := flag.String("nats", "bin/nats-server", "nats-server binary; when empty or missing, its column says not measured")
	ncatMax := flag.Int("ncat-max-subs", 1000, "largest number of subscribers to try with ncat, whose broker uses select() and cannot pass 1024 descriptors")
	signedSubs := flag.Int("signed-subs", 100, "subscribers of the signed scenarios")
	signedRate := flag.Int("signed-rate", 1000, "lines per second of the signed-latency scenario")
	wsSubs := flag.Int("websocket-subs", 1000, "subscribers of the websocket scenario, on each listener")
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		return 1
	}
	haveChattyd := *chattyd != ""
	if !haveChattyd {
		fmt.Fprintln(os.Stderr, "suite: no chattyd given: it is not measured")
	} else if _, err := os.Stat(*chattyd); err != nil {
		haveChattyd = false
		fmt.Fprintf(os.Stderr, "suite: %s not found: chattyd is not measured (build it with: go build -o bin/chattyd ./daemon)\n", *chattyd)
	}
	haveNats := *natsBin != ""
	if haveNats {
		if _, err := os.Stat(*natsBin); err != nil {
			haveNats = false
			fmt.Fprintf(os.Stderr, "suite: %s not found: nats-server is not measured (install it with bench/run.sh)\n", *natsBin)
		}
	}
	selected := func(name string) bool { return *only == "" || strings.Contains(","+*only+",", ","+name+",") }
	var scenarios []scenario
	for _, sc := range plan() {
		if selected(sc.name) {
			scenarios = append(scenarios, sc)
		}
	}
	var signedRuns []signedScenario
	for _, sc := range signedPlan(*signedSubs, *signedRate) {
		if selected(sc.name) && haveChattyd {
			signedRuns = append(signedRuns, sc)
		}
	}

	wsRun := selected("websocket") && haveChattyd
	r := &runner{ctx: ctx, load: *load, out: *out, duration: *duration, warmup: *warmup, results: map[string]*result{}}
	for _, sc := range scenarios {
		for _, tgt := range sc.targets {
			if (tgt == "chattyd" && !haveChattyd) || (tgt == "nats" && !haveNats) {
				continue
			}
			if tgt == "ncat" && subsOf(sc) > *ncatMax {
				continue
			}
			args := append([]string{"-target", tgt}, sc.args...)
			switch tgt {
			case "chattyd":
				args = append(args, "-bin", *chattyd)
			case "nats":
				args = append(args, "-bin", *natsBin)
			}
			if !r.run(sc.name, tgt, args) {
				return 1
			}
		}
	}
	for _, sc := range signedRuns {
		for _, v := range sc.runs {
			if !r.run(sc.name, v.key, append(v.args, "-bin", *chattyd)) {
				return 1
			}
		}
	}

	ws := wsPlan(*wsSubs)
	if wsRun {
		for _, v := range ws.runs {
			if !r.run(ws.name, v.key, append(v.args, "-bin", *chattyd)) {
				return 1
			}
		}
	}

	fmt.Println()
	fmt.Println(machine())
	if len(scenarios) > 0 {
		fmt.Println()
		fmt.Print(table(scenarios, r.results, map[string]bool{"chattyd": haveChattyd, "ncat": true, "nats": haveNats}, *ncatMax))
	}
	if len(signedRuns) > 0 {
		fmt.Println()
		fmt.Print(signedTable(signedRuns, r.results))
	}
	if wsRun {
		fmt.Println()
		fmt.Print(wsTable(ws, r.results))
	}
	if len(r.notes) > 0 {
		fmt.Println()
		fmt.Println("Problems (values marked ⚠):")
		for _, n := range r.notes {
			fmt.Println("- " + n)
		}
	}
	if r.failed {
		return 1
	}
	return 0
}

// runner runs chattyload for each scenario and target and keeps the
// results by "scenario/target".
type runner struct {
	ctx              context.Context
	load, out        string
	duration, warmup time.Duration
	results          map[string]*result
	notes            []string // problems, listed under the tables
	failed           bool     // a run failed or reported errors
}

// run runs chattyload once with args after the flags every run shares,
// and reports false if the suite was interrupted.
func (r *runner) run(name, target string, args []string) bool {
	base := name + "-" + target
	all := append([]string{"-label", name, "-json",
		"-duration", r.duration.String(), "-warmup", r.warmup.String(),
		"-server-log", filepath.Join(r.out, base+".log")}, args...)
	res, err := runOne(r.ctx, r.load, all, filepath.Join(r.out, base+".json"))
	if r.ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "suite: interrupted")
		return false
	}
	if err != nil {
		r.failed = true
		r.notes = append(r.notes, fmt.Sprintf("%s against %s: %v", name, target, err))
		return true
	}
	r.results[name+"/"+target] = res
	for _, e := range res.Errors {
		r.failed = true
		r.notes = append(r.notes, fmt.Sprintf("%s against %s: %s", name, target, e))
	}
	return true
}

// runOne runs chattyload once, passes its human report through to stderr
// and returns its JSON report, also saved to jsonPath.
func runOne(ctx context.Context, load string, args []string, jsonPath string) (*result, error) {
	fmt.Fprintf(os.Stderr, "$ %s %s\n", load, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, load, args...)
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var jsonLine []byte
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if bytes.HasPrefix(sc.Bytes(), []byte("{")) {
			jsonLine = bytes.Clone(sc.Bytes())
			continue
		}
		fmt.Fprintln(os.Stderr, sc.Text())
	}
	_, _ = io.Copy(io.Discard, stdout)
	werr := cmd.Wait()
	if jsonLine == nil {
		return nil, fmt.Errorf("no report from chattyload (%v)", werr)
	}
	var r result
	if err := json.Unmarshal(jsonLine, &r); err != nil {
		return nil, fmt.Errorf("chattyload report: %w", err)
	}
	if err := os.WriteFile(jsonPath, append(jsonLine, '\n'), 0o644); err != nil {
		return nil, err
	}
	return &r, nil
}

// subsOf returns the -subs of a scenario.
func subsOf(sc scenario) int {
	for i, a := range sc.args {
		if a == "-subs" && i+1 < len(sc.args) {
			n, _ := strconv.Atoi(sc.args[i+1])
			return n
		}
	}
	return 0
}

// table renders the results as Markdown: a column per target, then the
// ratios of chattyd to each other target.
func table(scenarios []scenario, results map[string]*result, have map[string]bool, ncatMax int) string {
	var b strings.Builder
	b.WriteString("| Scenario | Measure |")
	for _, t := range targets {
		b.WriteString(" " + t.title + " |")
	}
	for _, t := range targets[1:] {
		b.WriteString(" chattyd/" + t.name + " |")
	}
	b.WriteString("\n|---|---|")
	for range 2*len(targets) - 1 {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, sc := range scenarios {
		for i, rw := range sc.rows {
			title := ""
			if i == 0 {
				title = sc.title
			}
			fmt.Fprintf(&b, "| %s | %s |", title, rw.measure)
			cd := results[sc.name+"/chattyd"]
			for _, t := range targets {
				r := results[sc.name+"/"+t.name]
				c := cell(r, rw)
				switch {
				case !slices.Contains(sc.targets, t.name):
					c = "n/a"
					if t.name == "ncat" {
						c = "n/a: relays acks to all"
					}
				case t.name == "ncat" && subsOf(sc) > ncatMax:
					c = "n/a: select(), 1024 fds"
				case r == nil && !have[t.name]:
					c = "not measured"
				}
				b.WriteString(" " + c + " |")
			}
			for _, t := range targets[1:] {
				r := results[sc.name+"/"+t.name]
				ratio := ""
				if cd != nil && r != nil && rw.value(r) > 0 && rw.measure != lost.measure {
					ratio = fmt.Sprintf("%.2f×", rw.value(cd)/rw.value(r))
				}
				b.WriteString(" " + ratio + " |")
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func cell(r *result, rw row) string {
	if r == nil {
		return "–"
	}
	s := rw.format(rw.value(r))
	if rw.measure == lost.measure && r.Disconnects > 0 {
		s += fmt.Sprintf(" (%d disconnected)", r.Disconnects)
	}
	if rw.measure == lost.measure && r.UndrainedN > 0 {
		s += fmt.Sprintf(" (%d late)", r.UndrainedN)
	}
	if len(r.Errors) > 0 {
		s += " ⚠"
	}
	return s
}

func fmtCount(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f k", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtInt(v float64) string    { return strconv.FormatFloat(v, 'f', 0, 64) }
func fmtFloat1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
func fmtMicros(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
func fmtMillis(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// machine describes where the numbers come from.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("Machine: %d CPUs (%s), Linux %s, %s; load average at the end %s; %s",
		runtime.NumCPU(), model, kernel, runtime.Version(), load, time.Now().UTC().Format(time.RFC3339))
}
