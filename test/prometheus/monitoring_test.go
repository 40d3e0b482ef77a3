package prometheus

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	dashboardFile = "packaging/monitoring/chatty-dashboard.json"
	alertsFile    = "packaging/monitoring/chatty-alerts.yml"
)

// promtool checks the shipped alerting rules, and its unit tests
// (testdata/alerts_test.yml) show each alert firing when it should and
// not on a healthy chattyd.
func TestAlertRules(t *testing.T) {
	promtool := tool(t, "promtool")
	if out, err := exec.Command(promtool, "check", "rules", moduleFile(t, alertsFile)).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules %s: %v\n%s", alertsFile, err, out)
	}
	cmd := exec.Command(promtool, "test", "rules", "alerts_test.yml")
	cmd.Dir = "testdata"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool test rules testdata/alerts_test.yml: %v\n%s", err, out)
	}
}

// Every query of the dashboard and of the alerting rules names metrics
// that a running chattyd serves on metrics.listen, and the dashboard
// shows what an operator needs.
func TestMonitoringNamesServedMetrics(t *testing.T) {
	_, maddr := startChattyd(t, "pool:\n  size: 0\n")
	served := servedMetrics(scrape(t, maddr))
	if !served["chatty_feed_lines_total"] || !served["go_goroutines"] {
		t.Fatalf("the scrape lacks chatty_feed_lines_total or go_goroutines: %v", served)
	}
	// The work queue's and the shared feed's metrics are served only
	// with their sections: a chattyd of each adds them.
	for _, extra := range []struct{ body, want string }{
		{"pool:\n  size: 0\nbroadcast:\n  delivery: one\n", "chatty_queue_lines_waiting"},
		{"pool:\n  size: 0\nnats:\n  embedded:\n    enabled: true\n    listen: 127.0.0.1:0\n    store_dir: " + t.TempDir() + "\n", "chatty_nats_connected"},
	} {
		_, addr := startChattyd(t, extra.body)
		more := servedMetrics(scrape(t, addr))
		if !more[extra.want] {
			t.Fatalf("a chattyd with\n%s serves no %s", extra.body, extra.want)
		}
		maps.Copy(served, more)
	}
	served["up"] = true // Prometheus's own, for every target

	dashboard := dashboardQueries(t)
	if len(dashboard) < 15 {
		t.Fatalf("found only %d queries in %s", len(dashboard), dashboardFile)
	}
	used := map[string]bool{}
	check := func(file, expr string) {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric name found in %q", file, expr)
		}
		for _, n := range names {
			used[n] = true
			if !served[n] {
				t.Errorf("%s: %q names %s, which chattyd does not serve", file, expr, n)
			}
		}
	}
	for _, q := range dashboard {
		check(dashboardFile, q)
	}
	for _, want := range []string{
		"chatty_feed_lines_total",             // feed rate
		"chatty_acks_good_total",              // deliveries
		"chatty_clients_connected",            // clients
		"chatty_clients_slow_consumers_total", // slow consumers
		"chatty_pool_restarts_total",          // worker restarts
		"chatty_acks_mismatched_total",        // ack mismatches
		"chatty_stream_retained_bytes",        // retention
		"chatty_pool_replay_gaps_total",       // slots that missed lines
		"chatty_queue_dead_lettered_total",    // poison lines
		"chatty_queue_feed_held",              // a full work queue
		"chatty_nats_connected",               // the shared feed's connection
		"chatty_nats_gaps_total",              // lines gone from the stream
	} {
		if !used[want] {
			t.Errorf("%s shows no %s", dashboardFile, want)
		}
	}

	alerts := alertRules(t)
	for _, want := range []string{"ChattyWorkerCrashLoop", "ChattySlowConsumers", "ChattyFeedStalled", "ChattyAckMismatches", "ChattyRetentionExceeded"} {
		if _, ok := alerts[want]; !ok {
			t.Errorf("%s has no alert %s", alertsFile, want)
		}
	}
	for _, expr := range alerts {
		check(alertsFile, expr)
	}
}

// servedMetrics returns the metric names of a Prometheus text exposition.
func servedMetrics(text string) map[string]bool {
	names := map[string]bool{}
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, _, _ := strings.Cut(rest, " ")
			names[name] = true
		}
	}
	return names
}

// dashboardQueries returns every PromQL query of the dashboard: the
// panels' targets (in rows too) and the template variables' queries.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(moduleFile(t, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
			}
			for _, tg := range p.Targets {
				out = append(out, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		switch q := v.Query.(type) {
		case string:
			out = append(out, q)
		case map[string]any:
			s, _ := q["query"].(string)
			out = append(out, s)
		}
	}
	return out
}

type panel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// alertRules returns the alerting rules' expressions by alert name.
func alertRules(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(moduleFile(t, alertsFile))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

var (
	stringRE      = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchersRE    = regexp.MustCompile(`\{[^}]*\}`)
	rangeRE       = regexp.MustCompile(`\[[^\]]*\]`)
	groupingRE    = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	labelValuesRE = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,[^)]*\)`)
	identRE       = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// promqlKeywords are PromQL's words that are neither metrics nor
// functions.
var promqlKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}

// metricNames returns the metric names in a PromQL expression (or a
// Grafana label_values query): every identifier that is not a function,
// a keyword, a label or a duration. An unknown word counts as a metric
// name, so that the caller's check fails rather than passes on it.
func metricNames(expr string) []string {
	expr = stringRE.ReplaceAllString(expr, `""`)
	expr = matchersRE.ReplaceAllString(expr, " ")
	expr = rangeRE.ReplaceAllString(expr, " ")
	expr = groupingRE.ReplaceAllString(expr, " ")
	expr = labelValuesRE.ReplaceAllString(expr, " $1 ")
	var names []string
	for _, loc := range identRE.FindAllStringIndex(expr, -1) {
		word := expr[loc[0]:loc[1]]
		if loc[0] > 0 && (expr[loc[0]-1] >= '0' && expr[loc[0]-1] <= '9' || expr[loc[0]-1] == '.' || expr[loc[0]-1] == '$') {
			continue // a number's exponent or unit, or a Grafana variable
		}
		if strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " \t\n"), "(") {
			continue // a function
		}
		if slices.Contains(promqlKeywords, strings.ToLower(word)) {
			continue
		}
		names = append(names, word)
	}
	return names
}

// metricNames finds what a query names, and nothing else.
func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`rate(chatty_feed_lines_total{job="$job",instance=~"$instance"}[$__rate_interval])`, []string{"chatty_feed_lines_total"}},
		{`sum by (instance) (chatty_clients_connected) * 60`, []string{"chatty_clients_connected"}},
		{"max_over_time(a[10m])\n  < min_over_time(b{x=\"}\"}[10m])\nand increase(c[10m]) > 0", []string{"a", "b", "c"}},
		{`label_values(chatty_build_info{job="$job"}, instance)`, []string{"chatty_build_info"}},
		{`up == 0`, []string{"up"}},
		{`1e3 * rate(x[5m]) offset 1h`, []string{"x"}},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}
