package main

// The signed scenarios measure chattyd's signed listener end to end with
// chattyload -target chattyd-signed: subscribers verify every message with
// the daemon's public key before they count it (issue #5's targets).

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Checkpoint spacing of the chained runs: a signature at most every 1000
// messages, and at most 5 ms after a message, so that the delay it adds
// to a message stays well inside the 10 ms budget on p99.
const (
	checkpointEvery    = 1000
	checkpointInterval = 5 * time.Millisecond
)

// Targets of the signed scenarios.
const (
	perMessageTarget = 25000   // messages per second, signed, broadcast and verified
	chainedTarget    = 1000000 // verified deliveries per second
	checkpointBudget = 10.0    // ms the chained mode may add to the text listener's p99
)

// signedScenario is one line of the signed plan: runs of one load with
// different listeners or verification.
type signedScenario struct {
	name  string
	title string
	runs  []signedRun
}

// signedRun is one chattyload run of a signed scenario.
type signedRun struct {
	key   string // the run's name in results and files
	title string
	args  []string
}

// signedNames returns the names of the signed scenarios, for -only.
func signedNames() []string {
	var names []string
	for _, sc := range signedPlan(1, 1) {
		names = append(names, sc.name)
	}
	return names
}

// signedPlan returns the signed scenarios for subs subscribers, the
// latency one at rate lines per second. Every subscriber acks every
// message by its sequence number, as chatty's signed worker does, and so
// do the text listener's subscribers it is compared with.
func signedPlan(subs, rate int) []signedScenario {
	n := strconv.Itoa(subs)
	chained := []string{"-target", "chattyd-signed", "-mode", "chained",
		"-checkpoint-every", strconv.Itoa(checkpointEvery), "-checkpoint-interval", checkpointInterval.String()}
	perMessage := []string{"-target", "chattyd-signed", "-mode", "per-message"}
	common := []string{"-subs", n, "-ack"}
	with := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return append(out, common...)
	}
	// Without the cache every subscriber checks every signature; the
	// feeder then stays 64 lines ahead at most, so that the backlog
	// drains in seconds.
	noCache := []string{"-sigcache=false", "-window", "64"}
	rateArgs := []string{"-rate", strconv.Itoa(rate)}
	return []signedScenario{
		{name: "signed-per-message", title: n + " subs, per-message signatures, full speed", runs: []signedRun{
			{key: "cache", title: "shared signature cache", args: with(perMessage)},
			{key: "no-cache", title: "every subscriber checks every signature", args: with(perMessage, noCache)},
		}},
		{name: "signed-chained", title: n + " subs, chained, full speed", runs: []signedRun{
			{key: "cache", title: "shared signature cache", args: with(chained)},
			{key: "no-cache", title: "every subscriber checks every checkpoint", args: with(chained, noCache)},
		}},
		{name: "signed-latency", title: fmt.Sprintf("%s subs, %d lines/s", n, rate), runs: []signedRun{
			{key: "text", title: "text listener", args: with([]string{"-target", "chattyd"}, rateArgs)},
			{key: "chained", title: "chained, shared cache", args: with(chained, rateArgs)},
			{key: "per-message", title: "per-message, shared cache", args: with(perMessage, rateArgs)},
		}},
	}
}

// signedTable renders the signed runs as Markdown, one row per run, and
// then each target with the value measured.
func signedTable(scenarios []signedScenario, results map[string]*result) string {
	var b strings.Builder
	b.WriteString("| Scenario | Run | messages/s to each subscriber | deliveries/s, all subscribers | Ed25519 checks per message | latency p50 ms | latency p99 ms | lost | daemon CPU µs/message | tool CPUs |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, sc := range scenarios {
		for i, run := range sc.runs {
			title := ""
			if i == 0 {
				title = sc.title
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", title, run.title, signedCells(sc, results[sc.name+"/"+run.key]))
		}
	}
	b.WriteString("\n")
	for _, v := range verdicts(scenarios, results) {
		b.WriteString("- " + v + "\n")
	}
	return b.String()
}

// signedCells returns a run's cells after the first two, joined by " | ".
func signedCells(sc signedScenario, r *result) string {
	if r == nil {
		return strings.Repeat("– | ", 7) + "–"
	}
	warn := ""
	if len(r.Errors) > 0 {
		warn = " ⚠"
	}
	checks := "not signed"
	if r.Mode != "" && r.Verified > 0 {
		// Over the whole run: checks divided by the messages each
		// subscriber verified.
		checks = fmt.Sprintf("%.3f", float64(r.SigChecks)/(float64(r.Verified)/float64(r.Subs)))
	}
	p50, p99 := "–", "–"
	if r.Rate > 0 {
		p50, p99 = fmtMillis(r.P50us/1000), fmtMillis(r.P99us/1000)
	}
	cpu, tool := "–", "–"
	if msgs := perSub(r) * r.Seconds; msgs > 0 {
		cpu = fmtFloat1(r.ServerCPU * 1e6 / msgs)
	}
	if r.Seconds > 0 {
		tool = fmt.Sprintf("%.2f", r.ToolCPU/r.Seconds)
	}
	return strings.Join([]string{fmtCount(perSub(r)) + warn, fmtCount(r.DeliverRate), checks, p50, p99, fmtInt(float64(r.Lost)), cpu, tool}, " | ")
}

// perSub returns the messages per second each subscriber received (and
// verified): at full speed the feeder writes in batches, so this is
// steadier than the lines fed per second.
func perSub(r *result) float64 {
	if r.Subs == 0 {
		return 0
	}
	return r.DeliverRate / float64(r.Subs)
}

// verdicts compares the runs with issue #5's targets.
func verdicts(scenarios []signedScenario, results map[string]*result) []string {
	var out []string
	met := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "**missed**"
	}
	for _, sc := range scenarios {
		switch sc.name {
		case "signed-per-message":
			if r := results[sc.name+"/cache"]; r != nil {
				out = append(out, fmt.Sprintf("per-message: %s messages/s signed, broadcast to %d subscribers and verified by each (target ≥ %s): %s",
					fmtCount(perSub(r)), r.Subs, fmtCount(perMessageTarget), met(perSub(r) >= perMessageTarget && len(r.Errors) == 0)))
			}
		case "signed-chained":
			if r := results[sc.name+"/cache"]; r != nil {
				out = append(out, fmt.Sprintf("chained: %s verified deliveries/s (target ≥ %s): %s",
					fmtCount(r.DeliverRate), fmtCount(chainedTarget), met(r.DeliverRate >= chainedTarget && len(r.Errors) == 0)))
			}
		case "signed-latency":
			text, chained := results[sc.name+"/text"], results[sc.name+"/chained"]
			if text != nil && chained != nil {
				added := (chained.P99us - text.P99us) / 1000
				out = append(out, fmt.Sprintf("chained, checkpoint every %d or %s: p99 %s ms against the text listener's %s ms, %+.2f ms (target ≤ +%.0f ms): %s",
					checkpointEvery, checkpointInterval, fmtMillis(chained.P99us/1000), fmtMillis(text.P99us/1000), added, checkpointBudget,
					met(added <= checkpointBudget && len(chained.Errors)+len(text.Errors) == 0)))
			}
		}
	}
	return out
}
