package main

// The websocket scenario compares chattyd's WebSocket listener with its
// TCP text listener in the same run: the same number of subscribers at
// full speed, and what an idle connection of each costs the daemon.

import (
	"fmt"
	"strconv"
	"strings"
)

// wsRatioTarget is the least share of the TCP listener's deliveries per
// second the WebSocket listener must reach.
const wsRatioTarget = 0.5

// websocketd is not measured beside them: its module cannot be fetched.
const websocketdNote = "websocketd: not measured; `go install github.com/joewalnes/websocketd@latest` fails, the module proxy answers 403 (module not available)"

// wsPlan returns the websocket scenario for subs subscribers.
func wsPlan(subs int) signedScenario {
	n := strconv.Itoa(subs)
	common := []string{"-subs", n, "-window", strconv.Itoa(min(4096, max(32, 409600/subs)))}
	return signedScenario{name: "websocket", title: n + " subs, 64 B lines, full speed", runs: []signedRun{
		{key: "tcp", title: "TCP text listener", args: append([]string{"-target", "chattyd"}, common...)},
		{key: "ws", title: "WebSocket listener", args: append([]string{"-target", "chattyd-ws"}, common...)},
	}}
}

// wsTable renders the websocket runs as Markdown and the verdict.
func wsTable(sc signedScenario, results map[string]*result) string {
	var b strings.Builder
	b.WriteString("| Scenario | Listener | deliveries/s | lost | server CPU µs/delivery | server peak RSS MiB | idle KiB per connection |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|\n")
	for i, run := range sc.runs {
		title := ""
		if i == 0 {
			title = sc.title
		}
		r := results[sc.name+"/"+run.key]
		cells := "– | – | – | – | –"
		if r != nil {
			warn := ""
			if len(r.Errors) > 0 {
				warn = " ⚠"
			}
			cells = strings.Join([]string{fmtCount(r.DeliverRate) + warn, cell(r, lost), fmtMicros(r.ServerNsPer / 1000),
				fmtFloat1(float64(r.PeakRSSKiB) / 1024), fmtFloat1(r.IdleConnBytes / 1024)}, " | ")
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", title, run.title, cells)
	}
	b.WriteString("\n")
	tcp, ws := results[sc.name+"/tcp"], results[sc.name+"/ws"]
	if tcp != nil && ws != nil && tcp.DeliverRate > 0 {
		ratio := ws.DeliverRate / tcp.DeliverRate
		ok := ratio >= wsRatioTarget && ws.Lost == 0 && ws.Disconnects == 0 && len(ws.Errors) == 0
		verdict := "**missed**"
		if ok {
			verdict = "**met**"
		}
		fmt.Fprintf(&b, "- WebSocket/TCP deliveries/s: %.2f× with %d lost (target ≥ %.1f×, 0 lost): %s\n", ratio, ws.Lost, wsRatioTarget, verdict)
	}
	b.WriteString("- " + websocketdNote + "\n")
	return b.String()
}
