package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatty-dev/chatty/test/harness"
)

// check-config exits 0 on a valid file and 1 on an invalid one, naming
// every problem with its line.
func TestCheckConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		yaml string
		code int
		want []string // in the output, each
		bug  string   // a known bug: skip
	}{
		{
			name: "valid",
			yaml: config("broadcast:\n  max_clients: 5\n  idle_timeout: 30s\nfeed:\n  on_eof: stop\n"),
			code: 0,
			want: []string{"configuration is valid"},
		},
		{
			name: "invalid values",
			yaml: "version: 1\n" + // 1
				"broadcast:\n" + // 2
				"  max_clients: -1\n" + // 3
				"  queue_lines: 0\n" + // 4
				"feed:\n" + // 5
				"  on_eof: maybe\n" + // 6
				"log:\n" + // 7
				"  format: xml\n", // 8
			code: 1,
			want: []string{
				"line 3: broadcast.max_clients",
				"line 4: broadcast.queue_lines",
				"line 6: feed.on_eof",
				"line 8: log.format",
			},
		},
		{
			name: "unknown fields",
			yaml: "version: 1\nbroadcast:\n  lisen: 127.0.0.1:1\nfeed:\n  on_oef: stop\n",
			code: 1,
			want: []string{`line 3: broadcast.lisen: unknown field "lisen"`, `line 5: feed.on_oef: unknown field "on_oef"`},
		},
		{
			name: "missing version",
			yaml: "broadcast:\n  max_clients: 5\n",
			code: 1,
			want: []string{"version"},
		},
		{
			name: "syntax error",
			yaml: "version: 1\nbroadcast:\n  max_clients: [5\n",
			code: 1,
			want: []string{"line "},
		},
		{
			name: "unknown field and invalid value",
			yaml: "version: 1\nbroadcast:\n  lisen: 127.0.0.1:1\n  max_clients: -1\n",
			code: 1,
			want: []string{`line 3: broadcast.lisen: unknown field "lisen"`, "line 4: broadcast.max_clients"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.bug != "" {
				t.Skip("BUG: " + tc.bug)
			}
			path := writeFile(t, "chattyd.yaml", tc.yaml)
			r := harness.Run(t, short, "check-config", path)
			if r.Code != tc.code {
				t.Errorf("exit status %d, want %d", r.Code, tc.code)
			}
			out := r.Stdout + r.Stderr
			for _, w := range append(tc.want, path) {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
		})
	}
}

// print-config prints the effective configuration (file, defaults and
// flags) as YAML that check-config accepts.
func TestPrintConfig(t *testing.T) {
	t.Parallel()
	in := writeFile(t, "in.yaml", config("broadcast:\n  max_clients: 7\n"))
	r := harness.Run(t, short, "--config", in, "--listen", "127.0.0.1:4242", "print-config")
	if r.Code != 0 {
		t.Fatalf("print-config: exit status %d\n%s", r.Code, r.Stderr)
	}
	for _, want := range []string{"version: 1", "max_clients: 7", "listen: 127.0.0.1:4242", "on_eof: keep"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("print-config output does not contain %q:\n%s", want, r.Stdout)
		}
	}
	path := writeFile(t, "printed.yaml", r.Stdout)
	if c := harness.Run(t, short, "check-config", path); c.Code != 0 {
		t.Fatalf("check-config rejects what print-config printed: exit status %d\n%s\n%s", c.Code, c.Stderr, r.Stdout)
	}
}

// --log-format json makes every log line a JSON object.
func TestJSONLog(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Args: []string{"--log-format", "json"}})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short)
	d.WaitLog(t, "New connection established", short)

	var sawListening, sawConnection bool
	for _, line := range strings.Split(strings.TrimSuffix(d.Stderr(), "\n"), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		for _, key := range []string{"level", "msg", "time"} {
			if _, ok := entry[key]; !ok {
				t.Errorf("log line without %q: %s", key, line)
			}
		}
		msg, _ := entry["msg"].(string)
		if msg == "The TCP server is listening on "+d.Addr() {
			sawListening = true
		}
		if msg == "New connection established" && entry["connection"] == 1.0 {
			sawConnection = true
		}
	}
	if !sawListening || !sawConnection {
		t.Errorf("missing entries (listening: %v, connection 1: %v) in\n%s", sawListening, sawConnection, d.Stderr())
	}
}

// The flags that override the configuration work after print-config and
// check-config too, and print-config FILE prints FILE, or refuses it.
func TestConfigCommandsTakeFlagsAfter(t *testing.T) {
	t.Parallel()
	in := writeFile(t, "in.yaml", config("broadcast:\n  max_clients: 7\n"))
	bad := writeFile(t, "bad.yaml", config("broadcst:\n  max_clients: 7\n"))
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stdout for code 0, in stderr otherwise
	}{
		{"workers after print-config", []string{"print-config", "--workers", "8"}, 0, "size: 8"},
		{"config after print-config", []string{"print-config", "--config", in}, 0, "max_clients: 7"},
		{"print-config FILE", []string{"print-config", in}, 0, "max_clients: 7"},
		{"print-config FILE with a flag", []string{"print-config", "--workers", "3", in}, 0, "size: 3"},
		{"print-config a misspelt FILE", []string{"print-config", bad}, 1, `unknown field "broadcst"`},
		{"print-config two files", []string{"print-config", in, bad}, 2, "name one file"},
		{"print-config FILE and another --config", []string{"--config", bad, "print-config", in}, 2, "named twice"},
		{"check-config --config FILE", []string{"check-config", "--config", in}, 0, "configuration is valid"},
		{"check-config --config a misspelt FILE", []string{"check-config", "--config", bad}, 1, `unknown field "broadcst"`},
		{"an unknown flag after print-config", []string{"print-config", "--bogus"}, 2, "print-config --help"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := harness.Run(t, short, tc.args...)
			if r.Code != tc.code {
				t.Fatalf("exit status %d, want %d\nstdout: %s\nstderr: %s", r.Code, tc.code, r.Stdout, r.Stderr)
			}
			out := r.Stderr
			if tc.code == 0 {
				out = r.Stdout
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output does not contain %q:\n%s", tc.want, out)
			}
		})
	}
}

// make build stamps the binaries with git describe, so that status and
// --version say which commit runs, not "dev".
func TestMakeBuildStampsVersion(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"git", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	describe, err := exec.Command("git", "-C", root, "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	bin := t.TempDir()
	if out, err := exec.Command("make", "-s", "-C", root, "build", "BIN="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	want := strings.TrimSpace(string(describe))
	for _, c := range [][]string{{"chattyd", "--version"}, {"chattyctl", "version"}} {
		out, err := exec.Command(filepath.Join(bin, c[0]), c[1]).Output()
		if err != nil {
			t.Fatalf("%s %s: %v", c[0], c[1], err)
		}
		if !strings.Contains(string(out), " "+want) {
			t.Errorf("%s %s printed %q, want the stamp %q", c[0], c[1], out, want)
		}
	}
}

// make run passes ARGS to chattyd and runs the demo at info level: the
// debug lines of every line in and out come only with -v.
func TestMakeRunTakesArgs(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		out, err := exec.Command("make", append([]string{"-s", "-n", "-C", root, "run"}, args...)...).Output()
		if err != nil {
			t.Fatalf("make -n run: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return lines[len(lines)-1]
	}
	if line := run(); strings.Contains(line, "--verbose") || strings.Contains(line, " -v") || !strings.Contains(line, "--demo") {
		t.Errorf("make run runs %q, want the demo at info level", line)
	}
	if line := run("ARGS=--listen 127.0.0.1:6000 -v"); !strings.HasSuffix(line, "--demo --listen 127.0.0.1:6000 -v") {
		t.Errorf("make run ARGS=... runs %q, want the flags passed to chattyd", line)
	}
}
