// Package prometheus checks chattyd's metrics as a monitoring system reads
// them: a real Prometheus (Debian's prometheus package) scrapes
// metrics.listen, promtool checks and unit-tests the alerting rules of
// packaging/monitoring, and every query of the Grafana dashboard names
// metrics that chattyd serves.
//
// Without the prometheus package the tests that need it skip, except
// under CI=true, where they install it as root or fail: CI never skips
// them. .ci/run installs it before make test.
package prometheus

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// Generous deadlines: the tests run with -race on small shared machines,
// and Prometheus scrapes once a second.
const (
	short = 10 * time.Second
	long  = 60 * time.Second
)

// metricsRE matches chattyd's log line that says where metrics.listen is.
var metricsRE = regexp.MustCompile(`Metrics are served on http://([0-9.:\[\]]+)/metrics`)

// underCI reports whether the tests run in CI, where nothing may skip.
func underCI() bool { return os.Getenv("CI") == "true" }

var install struct {
	once sync.Once
	err  error
}

// tool returns the path of a program of Debian's prometheus package
// (prometheus, promtool). Where it is missing, under CI as root, the
// package is installed once; otherwise the test skips, or fails under CI.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if underCI() && os.Geteuid() == 0 {
		install.once.Do(func() { install.err = installPrometheus() })
		if install.err != nil {
			t.Fatalf("installing the prometheus package for %s: %v", name, install.err)
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if underCI() {
		t.Fatalf("%s is not installed and CI=true, where this test must run: install Debian's prometheus package (apt-get install prometheus; .ci/run does, as root)", name)
	}
	t.Skipf("%s is not installed: apt-get install prometheus (CI runs this test)", name)
	return ""
}

// installPrometheus installs Debian's prometheus package. The package may
// start its own service: that one is stopped, as the tests run their own
// Prometheus, and one left running fails the install.
func installPrometheus() error {
	before := prometheusPIDs()
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{
		{"apt-get", "update", "-qq"},
		{"apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	if _, err := exec.LookPath("systemctl"); err == nil {
		// Errors are fine: there may be no systemd to ask.
		exec.Command("systemctl", "stop", "prometheus.service").Run()
	}
	var stray []int
	for pid := range prometheusPIDs() {
		if !before[pid] {
			stray = append(stray, pid)
		}
	}
	if len(stray) > 0 {
		return fmt.Errorf("installing the package started Prometheus (pids %v) and systemctl did not stop it; stop it (systemctl stop prometheus) and run again", stray)
	}
	return nil
}

// prometheusPIDs returns the processes named prometheus.
func prometheusPIDs() map[int]bool {
	pids := map[int]bool{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && harness.Comm(pid) == "prometheus" {
			pids[pid] = true
		}
	}
	return pids
}

// moduleFile returns the path of a file of the module, such as
// packaging/monitoring/chatty-alerts.yml.
func moduleFile(t *testing.T, rel string) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, rel)
}

// startChattyd starts chattyd with metrics.listen on a port of the
// kernel's choice and returns it with that address. body is more YAML
// after version and metrics.
func startChattyd(t *testing.T, body string) (*harness.Daemon, string) {
	t.Helper()
	d := harness.StartDaemon(t, harness.Options{Config: "version: 1\nmetrics:\n  listen: 127.0.0.1:0\n" + body})
	return d, d.WaitLogRE(t, metricsRE, harness.StartTimeout)[1]
}

// scrape returns the text of GET http://addr/metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), short)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s, %v\n%s", addr, resp.Status, err, b)
	}
	return string(b)
}

// promServer is a Prometheus process of the test's own: its own
// configuration, storage and port on 127.0.0.1.
type promServer struct {
	base string // http://127.0.0.1:PORT
	cmd  *exec.Cmd
	out  *harness.Output
	done chan struct{}
}

// startPrometheus runs bin scraping target (host:port) every second as
// job "chatty", with the rule files loaded, and returns once it is ready.
// It is stopped when the test ends, and its log printed if the test failed.
func startPrometheus(t *testing.T, bin, target string, ruleFiles ...string) *promServer {
	t.Helper()
	dir := t.TempDir()
	var rules strings.Builder
	for _, f := range ruleFiles {
		fmt.Fprintf(&rules, "  - %q\n", f)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
%sscrape_configs:
  - job_name: chatty
    static_configs:
      - targets: [%q]
`, rules.String(), target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// The port was free a moment ago; another process may take it first,
	// so try a few.
	for attempt := 1; ; attempt++ {
		addr := harness.FreeAddr(t)
		p := &promServer{base: "http://" + addr, out: harness.NewOutput(), done: make(chan struct{})}
		p.cmd = exec.Command(bin,
			"--config.file="+cfgFile,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data%d", attempt)),
			"--web.listen-address="+addr,
		)
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", bin, err)
		}
		go func() { p.cmd.Wait(); close(p.done) }()
		t.Cleanup(p.stop)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("Prometheus's log (%s):\n%s", p.base, p.out.String())
			}
		})
		if p.waitReady(t) {
			return p
		}
		if attempt == 3 || !strings.Contains(p.out.String(), "address already in use") {
			t.Fatalf("Prometheus exited before it was ready:\n%s", p.out.String())
		}
	}
}

// waitReady polls /-/ready until it answers 200 (true) or Prometheus
// exits (false); it fails the test at the deadline.
func (p *promServer) waitReady(t *testing.T) bool {
	t.Helper()
	deadline := time.Now().Add(long)
	for {
		select {
		case <-p.done:
			return false
		default:
		}
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus not ready at %s after %s (last: %v)", p.base, long, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the Prometheus process: SIGTERM, then SIGKILL to its group.
func (p *promServer) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// sample is one series of an instant query's answer.
type sample struct {
	labels map[string]string
	value  float64
}

// query runs an instant query through /api/v1/query.
func (p *promServer) query(q string) ([]sample, error) {
	var answer struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := p.get("/api/v1/query?query="+url.QueryEscape(q), &answer); err != nil {
		return nil, err
	}
	if answer.Status != "success" || answer.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: status %s, result type %s: %s", q, answer.Status, answer.Data.ResultType, answer.Error)
	}
	out := make([]sample, len(answer.Data.Result))
	for i, r := range answer.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", q, r.Value[1], err)
		}
		out[i] = sample{labels: r.Metric, value: v}
	}
	return out, nil
}

// get decodes the JSON answer of GET path.
func (p *promServer) get(path string, into any) error {
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return json.Unmarshal(b, into)
}
