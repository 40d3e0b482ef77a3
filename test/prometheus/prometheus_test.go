package prometheus

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/test/harness"
)

// ctlStatus is chattyctl status --json.
func ctlStatus(t *testing.T, sock string) control.Status {
	t.Helper()
	out, err := exec.Command(harness.BuildBinaries(t).Chattyctl, "--socket", sock, "status", "--json").Output()
	if err != nil {
		t.Fatalf("chattyctl status --json: %v", err)
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("chattyctl status --json: %v\n%s", err, out)
	}
	return st
}

// waitStatus polls the control API until ok accepts its status.
func waitStatus(t *testing.T, sock, what string, ok func(control.Status) bool) {
	t.Helper()
	c := client.New(sock)
	deadline := time.Now().Add(long)
	for {
		st, err := c.Status(t.Context())
		if err == nil && ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the status does not show %s: %+v, %v", long, what, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantFromStatus is what Prometheus must report for chattyd at addr,
// read from chattyctl's status: lines fed, clients, workers, acks.
func wantFromStatus(st control.Status) map[string]float64 {
	return map[string]float64{
		`up{job="chatty"}`: 1,
		`chatty_build_info{job="chatty",version="` + st.Version + `"}`: 1,
		`chatty_feed_lines_total{job="chatty"}`:                        float64(st.Feed.Lines),
		`chatty_feed_bytes_total{job="chatty"}`:                        float64(st.Feed.Bytes),
		`chatty_clients_connected{job="chatty"}`:                       float64(st.Clients.Connected),
		`chatty_clients_accepted_total{job="chatty"}`:                  float64(st.Clients.Accepted),
		`chatty_acks_good_total{job="chatty"}`:                         float64(st.Clients.AcksGood),
		`chatty_acks_mismatched_total{job="chatty"}`:                   float64(st.Clients.AcksMismatched),
		`chatty_pool_workers_desired{job="chatty"}`:                    float64(st.Pool.Desired),
		`chatty_pool_workers_running{job="chatty"}`:                    float64(st.Pool.Running),
		`chatty_pool_restarts_total{job="chatty"}`:                     float64(st.Pool.Restarts),
	}
}

// waitPrometheus polls Prometheus's query API until every query answers
// one series of instance with its wanted value, and fails naming what
// differs at the deadline.
func waitPrometheus(t *testing.T, p *promServer, instance string, want map[string]float64) {
	t.Helper()
	var diffs []string
	deadline := time.Now().Add(long)
	for {
		diffs = diffs[:0]
		for q, v := range want {
			got, err := p.query(q)
			switch {
			case err != nil:
				diffs = append(diffs, err.Error())
			case len(got) != 1:
				diffs = append(diffs, fmt.Sprintf("%s: %d series, want 1: %v", q, len(got), got))
			case got[0].labels["instance"] != instance:
				diffs = append(diffs, fmt.Sprintf("%s: instance %q, want %q", q, got[0].labels["instance"], instance))
			case got[0].value != v:
				diffs = append(diffs, fmt.Sprintf("%s = %v, chattyctl status says %v", q, got[0].value, v))
			}
		}
		if len(diffs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			slices.Sort(diffs)
			t.Fatalf("after %s Prometheus still differs from chattyd:\n  %s", long, strings.Join(diffs, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A real Prometheus scrapes metrics.listen and reports the values chattyd
// reports itself, and follows them as they change; it loads the shipped
// alerting rules.
func TestPrometheusScrapesChattyd(t *testing.T) {
	bin := tool(t, "prometheus")
	// Workers that live long and clients that may stay idle: nothing
	// changes unless the test changes it.
	d, maddr := startChattyd(t, `pool:
  size: 2
  worker:
    lifetime_min: 1h
    lifetime_max: 2h
broadcast:
  idle_timeout: 0s
`)
	sock := d.ControlSocket()
	for range 3 {
		harness.Dial(t, d.Addr())
	}
	// Lines reach the clients connected when they are fed.
	waitStatus(t, sock, "5 clients and 2 workers", func(st control.Status) bool {
		return st.Clients.Connected == 5 && st.Pool.Running == 2
	})
	d.Feed("one", "two", "three", "four", "five")
	// Both workers acknowledge every line.
	waitStatus(t, sock, "5 lines, 5 clients, 2 workers and 10 acks", func(st control.Status) bool {
		return st.Feed.Lines == 5 && st.Clients.Connected == 5 && st.Pool.Running == 2 && st.Clients.AcksGood == 10
	})
	st := ctlStatus(t, sock)

	rules := moduleFile(t, "packaging/monitoring/chatty-alerts.yml")
	p := startPrometheus(t, bin, maddr, rules)
	waitPrometheus(t, p, maddr, wantFromStatus(st))

	// Prometheus follows: more lines, one more client.
	harness.Dial(t, d.Addr())
	waitStatus(t, sock, "6 clients", func(st control.Status) bool { return st.Clients.Connected == 6 })
	d.Feed("six", "seven", "eight")
	waitStatus(t, sock, "8 lines, 6 clients and 16 acks", func(st control.Status) bool {
		return st.Feed.Lines == 8 && st.Clients.Connected == 6 && st.Clients.AcksGood == 16
	})
	st = ctlStatus(t, sock)
	if st.Feed.Lines != 8 || st.Clients.Connected != 6 || st.Pool.Running != 2 {
		t.Fatalf("chattyctl status: %d lines, %d clients, %d workers; want 8, 6, 2", st.Feed.Lines, st.Clients.Connected, st.Pool.Running)
	}
	waitPrometheus(t, p, maddr, wantFromStatus(st))

	// The shipped rules loaded and evaluate without error.
	var answer struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	poll.Eventually(t, long, func() bool {
		if err := p.get("/api/v1/rules", &answer); err != nil || len(answer.Data.Groups) != 1 {
			return false
		}
		for _, r := range answer.Data.Groups[0].Rules {
			if r.Health != "ok" {
				return false
			}
		}
		return len(answer.Data.Groups[0].Rules) >= 4
	}, fmt.Sprintf("the rules of %s are not all loaded and healthy: %+v", rules, answer.Data.Groups))
	// Nothing is wrong with this chattyd: no alert fires.
	var alerts struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := p.get("/api/v1/alerts", &alerts); err != nil {
		t.Fatal(err)
	}
	if len(alerts.Data.Alerts) > 0 {
		t.Errorf("alerts on a healthy chattyd: %+v", alerts.Data.Alerts)
	}
}
