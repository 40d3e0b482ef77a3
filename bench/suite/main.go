// Command suite runs chatty's benchmark scenarios with chattyload, each
// against chattyd and against ncat --broker in the same run, and prints a
// Markdown table with the ratio chattyd/ncat. `make bench` runs it through
// bench/run.sh.
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
	target  float64 // for chattyd-only rows: the goal to compare with
}

var (
	deliveries = row{measure: "deliveries/s", value: func(r *result) float64 { return r.DeliverRate }, format: fmtCount}
	lost       = row{measure: "lines lost", value: func(r *result) float64 { return float64(r.Lost) }, format: fmtInt}
	cpuPer     = row{measure: "server CPU µs/delivery", value: func(r *result) float64 { return r.ServerNsPer / 1000 }, format: fmtMicros}
	rss        = row{measure: "server peak RSS MiB", value: func(r *result) float64 { return float64(r.PeakRSSKiB) / 1024 }, format: fmtFloat1}
	p50        = row{measure: "latency p50 ms", value: func(r *result) float64 { return r.P50us / 1000 }, format: fmtMillis}
	p99        = row{measure: "latency p99 ms", value: func(r *result) float64 { return r.P99us / 1000 }, format: fmtMillis}
)

func plan() []scenario {
	both := []string{"chattyd", "ncat"}
	ackTarget := deliveries
	ackTarget.target = 2e6
	return []scenario{
		{name: "full-100", title: "100 subs, 64 B lines, full speed", args: []string{"-subs", "100"},
			targets: both, rows: []row{deliveries, lost, cpuPer, rss}},
		{name: "full-1000", title: "1000 subs, 64 B lines, full speed", args: []string{"-subs", "1000"},
			targets: both, rows: []row{deliveries, lost, cpuPer, rss}},
		{name: "ack-100", title: "100 subs acking every line, full speed", args: []string{"-subs", "100", "-ack"},
			targets: []string{"chattyd"}, rows: []row{ackTarget, lost, cpuPer}},
		{name: "rate-100", title: "100 subs, 1000 lines/s", args: []string{"-subs", "100", "-rate", "1000"},
			targets: both, rows: []row{p50, p99, lost, cpuPer}},
	}
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
	only := flag.String("only", "", "comma-separated scenarios to run (full-100, full-1000, ack-100, rate-100)")
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
	var scenarios []scenario
	for _, sc := range plan() {
		if *only == "" || strings.Contains(","+*only+",", ","+sc.name+",") {
			scenarios = append(scenarios, sc)
		}
	}

	results := map[string]*result{} // by scenario/target
	var notes []string
	failed := false
	for _, sc := range scenarios {
		for _, tgt := range sc.targets {
			if tgt == "chattyd" && !haveChattyd {
				continue
			}
			args := append([]string{"-target", tgt, "-label", sc.name, "-json",
				"-duration", duration.String(), "-warmup", warmup.String(),
				"-server-log", filepath.Join(*out, sc.name+"-"+tgt+".log")}, sc.args...)
			if tgt == "chattyd" {
				args = append(args, "-bin", *chattyd)
			}
			res, err := runOne(ctx, *load, args, filepath.Join(*out, sc.name+"-"+tgt+".json"))
			if ctx.Err() != nil {
				fmt.Fprintln(os.Stderr, "suite: interrupted")
				return 1
			}
			if err != nil {
				failed = true
				notes = append(notes, fmt.Sprintf("%s against %s: %v", sc.name, tgt, err))
				continue
			}
			results[sc.name+"/"+tgt] = res
			for _, e := range res.Errors {
				failed = true
				notes = append(notes, fmt.Sprintf("%s against %s: %s", sc.name, tgt, e))
			}
		}
	}

	fmt.Println()
	fmt.Println(machine())
	fmt.Println()
	fmt.Print(table(scenarios, results, haveChattyd))
	if len(notes) > 0 {
		fmt.Println()
		fmt.Println("Problems (values marked ⚠):")
		for _, n := range notes {
			fmt.Println("- " + n)
		}
	}
	if failed {
		return 1
	}
	return 0
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

// table renders the results as Markdown.
func table(scenarios []scenario, results map[string]*result, haveChattyd bool) string {
	var b strings.Builder
	b.WriteString("| Scenario | Measure | chattyd | ncat --broker | chattyd/ncat |\n")
	b.WriteString("|---|---|---:|---:|---:|\n")
	for _, sc := range scenarios {
		for i, rw := range sc.rows {
			title := ""
			if i == 0 {
				title = sc.title
			}
			cd := results[sc.name+"/chattyd"]
			nc := results[sc.name+"/ncat"]
			cdCell := cell(cd, rw)
			if cd == nil && !haveChattyd {
				cdCell = "not measured yet"
			}
			ncCell, ratio := cell(nc, rw), ""
			switch {
			case len(sc.targets) == 1:
				ncCell = "n/a: ncat relays acks to all clients"
				if rw.target > 0 && cd != nil {
					ratio = fmt.Sprintf("%.2f of the %s target", rw.value(cd)/rw.target, rw.format(rw.target))
				}
			case cd != nil && nc != nil && rw.value(nc) > 0 && rw.measure != lost.measure:
				ratio = fmt.Sprintf("%.2f×", rw.value(cd)/rw.value(nc))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", title, rw.measure, cdCell, ncCell, ratio)
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
