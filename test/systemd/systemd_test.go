//go:build linux

// Package systemd tests the chatty package under a real, booted systemd:
// it boots a container with systemd-nspawn, installs the .deb there with
// dpkg, and drives the units with systemctl and chattyctl. It needs root
// and runs only when CHATTY_SYSTEMD_TEST=1, with CHATTY_DEB naming the
// package; `make systemd-test` sets both.
package systemd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// Deadlines: generous, the container shares a small CI machine.
const (
	short = 10 * time.Second
	long  = 30 * time.Second
)

const (
	service = "chattyd.service"
	addr    = "127.0.0.1:54321"
)

var sockets = []string{"chattyd.socket", "chattyd-control.socket", "chattyd-feed.socket"}

// TestSystemd runs every check in one container, in order: each step
// starts from where the previous one left the service.
func TestSystemd(t *testing.T) {
	deb := packageUnderTest(t)
	t.Parallel() // with TestLintian, which is slow
	pkgDir := t.TempDir()
	if err := os.Link(deb, filepath.Join(pkgDir, "chatty.deb")); err != nil {
		b, err := os.ReadFile(deb)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkgDir, "chatty.deb"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := bootContainer(t, pkgDir)
	s := &suite{c: c}

	steps := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"install", s.install},
		{"verify", s.verify},
		{"socket activation", s.activation},
		{"status", s.status},
		{"demo producer", s.demoProducer},
		{"producer in order", s.producerInOrder},
		{"scale", s.scale},
		{"send", s.send},
		{"reload", s.reload},
		{"watchdog", s.watchdog},
		{"kill -9", s.kill9},
		{"kill -9, forking workers", s.kill9Forking},
		{"chattyctl stop", s.ctlStop},
		{"systemctl stop", s.systemctlStop},
		{"journal", s.journal},
		{"identity, signed listener, TLS", s.signedTLS},
		{"remove and purge", s.removePurge},
	}
	for _, st := range steps {
		if !t.Run(st.name, st.fn) && st.name == "install" {
			t.Fatal("the package did not install; nothing else can be checked")
		}
	}
}

// packageUnderTest returns the .deb named by CHATTY_DEB, or skips the
// test unless CHATTY_SYSTEMD_TEST=1.
func packageUnderTest(t *testing.T) string {
	t.Helper()
	if os.Getenv("CHATTY_SYSTEMD_TEST") != "1" {
		t.Skip("boots a systemd container as root; run with make systemd-test (CHATTY_SYSTEMD_TEST=1)")
	}
	deb := os.Getenv("CHATTY_DEB")
	if deb == "" {
		t.Fatal("CHATTY_DEB must name the .deb to test; make systemd-test builds it")
	}
	deb, err := filepath.Abs(deb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("CHATTY_DEB: %v", err)
	}
	return deb
}

// TestLintian runs lintian on the package: no errors and no warnings
// allowed (the justified ones are overridden: packaging/lintian-overrides).
func TestLintian(t *testing.T) {
	deb := packageUnderTest(t)
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Skip("lintian is not installed (apt-get install lintian)")
	}
	t.Parallel()
	out, err := exec.Command("lintian", "--no-tag-display-limit", deb).CombinedOutput()
	if ee := (*exec.ExitError)(nil); err != nil && !errors.As(err, &ee) {
		t.Fatalf("lintian: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}
	t.Logf("lintian:\n%s", out)
}

// suite holds the container the steps share.
type suite struct {
	c *container
}

// show returns one property of a unit.
func (s *suite) show(t *testing.T, unit, prop string) string {
	t.Helper()
	return strings.TrimSpace(s.c.must(t, "systemctl", "show", "--property="+prop, "--value", unit))
}

// activeState returns a unit's ActiveState.
func (s *suite) activeState(t *testing.T, unit string) string {
	t.Helper()
	return s.show(t, unit, "ActiveState")
}

// waitState waits until unit's ActiveState is want.
func (s *suite) waitState(t *testing.T, unit, want string, timeout time.Duration) {
	t.Helper()
	var got string
	poll.Eventually(t, timeout, func() bool {
		got = s.activeState(t, unit)
		return got == want
	}, fmt.Sprintf("%s is not %s", unit, want))
}

// mainPID returns the service's main PID, 0 when none.
func (s *suite) mainPID(t *testing.T) int {
	t.Helper()
	pid, err := strconv.Atoi(s.show(t, service, "MainPID"))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func (s *suite) restarts(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(s.show(t, service, "NRestarts"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// proc is a process in the service's cgroup.
type proc struct {
	pid   int
	start string // start time in clock ticks, to tell a reused PID
	args  string
}

func (p proc) worker() bool { return strings.HasPrefix(p.args, "/usr/bin/chattyd worker") }

// guard reports whether p is the pool's worker guard.
func (p proc) guard() bool { return p.args == "/usr/bin/chattyd guard" }

// cgroupProcs lists the processes in the service's cgroup: empty when the
// service has none (systemd removes the cgroup).
func (s *suite) cgroupProcs(t *testing.T) []proc {
	t.Helper()
	out, err := s.c.sh(`
cg=$(systemctl show --property=ControlGroup --value ` + service + `)
[ -n "$cg" ] || exit 0
for root in /sys/fs/cgroup/unified /sys/fs/cgroup /sys/fs/cgroup/systemd; do
	f=$root$cg/cgroup.procs
	[ -f "$f" ] || continue
	for p in $(cat "$f"); do
		st=$(cut -d' ' -f22 /proc/$p/stat 2>/dev/null) || continue
		printf '%s\t%s\t%s\n' "$p" "$st" "$(tr '\0' ' ' </proc/$p/cmdline)"
	done
	exit 0
done`)
	if err != nil {
		t.Fatal(err)
	}
	var ps []proc
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			continue
		}
		pid, _ := strconv.Atoi(f[0])
		ps = append(ps, proc{pid: pid, start: f[1], args: strings.TrimSpace(f[2])})
	}
	return ps
}

func workers(ps []proc) []proc {
	var ws []proc
	for _, p := range ps {
		if p.worker() {
			ws = append(ws, p)
		}
	}
	return ws
}

// waitWorkers waits until exactly n workers, and nothing but them,
// chattyd and its worker guard, run in the service's cgroup.
func (s *suite) waitWorkers(t *testing.T, n int) []proc {
	t.Helper()
	var ps []proc
	poll.Eventually(t, long, func() bool {
		ps = s.cgroupProcs(t)
		return len(workers(ps)) == n && slices.ContainsFunc(ps, proc.guard) && len(ps) == n+2
	}, fmt.Sprintf("want chattyd, its guard and %d workers in its cgroup", n))
	return workers(ps)
}

// alive reports whether a process with p's PID and start time still runs.
func (s *suite) alive(p proc) bool {
	st, err := s.c.sh(fmt.Sprintf("cut -d' ' -f22,3 /proc/%d/stat", p.pid))
	if err != nil {
		return false
	}
	f := strings.Fields(st)
	return len(f) == 2 && f[1] == p.start && f[0] != "Z"
}

// client connects a TCP client to the broadcaster inside the container.
func (s *suite) client(t *testing.T) *harness.Client {
	t.Helper()
	conn, err := s.c.dial(addr)
	if err != nil {
		t.Fatalf("connect to %s in the container: %v", addr, err)
	}
	return harness.NewClient(t, conn)
}

// readUntil reads lines until one satisfies match and returns the lines
// read, that one included.
func readUntil(t *testing.T, cl *harness.Client, timeout time.Duration, match func(string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lines []string
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no matching line within %s; read %d lines, last: %q", timeout, len(lines), lastN(lines, 3))
		}
		line, err := cl.TryReadLine(left)
		if err != nil {
			t.Fatalf("read from chattyd after %d lines (last %q): %v", len(lines), lastN(lines, 3), err)
		}
		lines = append(lines, line)
		if match(line) {
			return lines
		}
	}
}

func lastN(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

// dropIn installs a runtime drop-in for unit and reloads systemd; it is
// removed when the test ends.
func (s *suite) dropIn(t *testing.T, unit, name, body string) {
	t.Helper()
	path := "/run/systemd/system/" + unit + ".d/" + name + ".conf"
	s.c.writeFile(t, path, body)
	s.c.must(t, "systemctl", "daemon-reload")
	t.Cleanup(func() {
		s.c.removeFile(t, path)
		s.c.run("systemctl", "daemon-reload")
	})
}

// install installs the package with dpkg: its maintainer scripts create
// the user, enable the units and start them.
func (s *suite) install(t *testing.T) {
	out, err := s.c.run("dpkg", "-i", "/srv/chatty-test/chatty.deb")
	t.Logf("dpkg -i:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		"/usr/bin/chattyd", "/usr/bin/chattyctl",
		"/lib/systemd/system/chattyd.service", "/lib/systemd/system/chattyd.socket",
		"/lib/systemd/system/chattyd-control.socket", "/lib/systemd/system/chattyd-feed.socket",
		"/lib/systemd/system/chattyd-demo-feed.service",
		"/usr/lib/sysusers.d/chattyd.conf", "/usr/lib/tmpfiles.d/chattyd.conf",
		"/etc/chattyd/chattyd.yaml",
		"/usr/share/man/man8/chattyd.8.gz", "/usr/share/man/man1/chattyctl.1.gz",
		"/usr/share/bash-completion/completions/chattyctl", "/usr/share/zsh/vendor-completions/_chattyctl",
		"/usr/share/doc/chatty/copyright", "/usr/share/doc/chatty/systemd.md",
	} {
		if _, err := s.c.run("test", "-s", f); err != nil {
			t.Errorf("the package did not install %s", f)
		}
	}
	if got := s.c.must(t, "dpkg-query", "--showformat=${Conffiles}", "--show", "chatty"); !strings.Contains(got, "/etc/chattyd/chattyd.yaml") {
		t.Errorf("/etc/chattyd/chattyd.yaml is not a conffile; conffiles: %q", got)
	}
	if got := s.c.must(t, "getent", "passwd", "chattyd"); !strings.Contains(got, ":/var/lib/chattyd:") || !strings.Contains(got, "nologin") {
		t.Errorf("user chattyd: %q, want home /var/lib/chattyd and no login shell", got)
	}
	for _, g := range []string{"chatty", "chatty-feed"} {
		if _, err := s.c.run("getent", "group", g); err != nil {
			t.Errorf("group %s was not created: %v", g, err)
		}
	}
	for _, u := range append(slices.Clone(sockets), service) {
		if got := strings.TrimSpace(s.c.must(t, "systemctl", "is-enabled", u)); got != "enabled" {
			t.Errorf("%s is %s after install, want enabled", u, got)
		}
		s.waitState(t, u, "active", short)
	}
	for path, want := range map[string]string{
		"/run/chattyd/control.sock": "chattyd chatty 660 socket",
		"/run/chattyd/feed":         "chattyd chatty-feed 620 fifo",
		"/var/lib/chattyd":          "chattyd chattyd 750 directory",
	} {
		got := strings.TrimSpace(s.c.must(t, "stat", "--format=%U %G %a %F", path))
		if !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}

// verify checks the installed units with systemd-analyze, binaries and
// manual pages in place.
func (s *suite) verify(t *testing.T) {
	units := []string{"chattyd.service", "chattyd.socket", "chattyd-control.socket", "chattyd-feed.socket", "chattyd-demo-feed.service"}
	var paths []string
	for _, u := range units {
		paths = append(paths, "/lib/systemd/system/"+u)
	}
	man := "--man=yes"
	if _, err := s.c.run("sh", "-c", "command -v man"); err != nil {
		t.Logf("no man(1) here (apt-get install man-db): not checking Documentation=man: links")
		man = "--man=no"
	}
	out, err := s.c.run("sh", "-c", `systemd-analyze verify "$@" 2>&1`, "verify", man, paths[0], paths[1], paths[2], paths[3], paths[4])
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = s.c.run("systemd-analyze", "security", "--offline=true", "--threshold=20", "/lib/systemd/system/chattyd.service")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	t.Logf("%s", lines[len(lines)-1])
	if err != nil {
		t.Errorf("chattyd.service is rated worse than 2.0: %v\n%s", err, out)
	}
}

// activation: with only the sockets up, a TCP client starts chattyd, and
// systemd calls it active only once it has said READY=1.
func (s *suite) activation(t *testing.T) {
	s.c.must(t, "systemctl", "stop", service)
	s.waitState(t, service, "inactive", short)
	for _, u := range sockets {
		if got := s.activeState(t, u); got != "active" {
			t.Fatalf("%s is %s with the service stopped, want active", u, got)
		}
	}
	// chattyd starts 2s late: a service that systemd took for ready at
	// exec (Type=simple) would be active during those 2s.
	s.dropIn(t, service, "50-test-late", "[Service]\nExecStart=\nExecStart=/bin/sh -c 'sleep 2; exec /usr/bin/chattyd --config /etc/chattyd/chattyd.yaml'\n")

	cl := s.client(t)
	s.waitState(t, service, "activating", short)
	// Once the shell runs "sleep 2", systemd has forked and exec'd the
	// ExecStart command, which would make a Type=simple or exec service
	// active, and chattyd has not run yet.
	poll.Eventually(t, short, func() bool {
		return slices.ContainsFunc(s.cgroupProcs(t), func(p proc) bool { return p.args == "sleep 2" })
	}, "the late ExecStart never ran sleep 2")
	if got := s.activeState(t, service); got != "activating" {
		t.Fatalf("chattyd.service is %s before chattyd can have sent READY=1, want activating", got)
	}
	s.waitState(t, service, "active", long)
	// The connection that started chattyd is served.
	cl.Send(harness.KeepAlive)
	if got := cl.ReadLine(short); got != harness.KeepAliveAck {
		t.Fatalf("the activating connection got %q, want %s", got, harness.KeepAliveAck)
	}
	if got := s.show(t, service, "Type"); got != "notify" {
		t.Errorf("Type=%s, want notify", got)
	}
}

// status: systemctl status shows chattyd's STATUS= line.
func (s *suite) status(t *testing.T) {
	re := regexp.MustCompile(`Status: "\d+ clients, \d+ lines, feed \w+"`)
	var out string
	poll.Eventually(t, short, func() bool {
		out, _ = s.c.run("systemctl", "status", "--no-pager", "--lines=0", service)
		return re.MatchString(out)
	}, "systemctl status shows no STATUS= from chattyd")
	t.Logf("%s", re.FindString(out))
}

// demoProducer: the example producer unit, as shipped, feeds chattyd.
func (s *suite) demoProducer(t *testing.T) {
	cl := s.client(t)
	s.c.must(t, "systemctl", "start", "chattyd-demo-feed.service")
	defer s.c.run("systemctl", "stop", "chattyd-demo-feed.service")
	demo := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Za-z0-9+/=]+$`)
	for i := 0; i < 3; i++ {
		readUntil(t, cl, short, demo.MatchString)
	}
}

// producerInOrder: a producer unit's lines reach a client in order. The
// shipped demo producer's unit runs seq instead of the demo feed.
func (s *suite) producerInOrder(t *testing.T) {
	const n = 2000
	s.dropIn(t, "chattyd-demo-feed.service", "50-test-seq", fmt.Sprintf("[Service]\nExecStart=\nExecStart=/usr/bin/seq --format=test-%%%%06g 1 %d\n", n))
	cl := s.client(t)
	s.c.must(t, "systemctl", "start", "chattyd-demo-feed.service")
	var got []string
	for len(got) < n {
		lines := readUntil(t, cl, long, func(l string) bool { return strings.HasPrefix(l, "test-") })
		got = append(got, lines[len(lines)-1])
	}
	for i, l := range got {
		if want := fmt.Sprintf("test-%06d", i+1); l != want {
			t.Fatalf("line %d is %q, want %q", i+1, l, want)
		}
	}
	s.waitState(t, "chattyd-demo-feed.service", "inactive", short)
}

// scale: chattyctl scale 5 leaves exactly five workers in the cgroup.
func (s *suite) scale(t *testing.T) {
	s.c.must(t, "chattyctl", "scale", "5")
	s.waitWorkers(t, 5)
}

// send: a typed message from chattyctl reaches a client.
func (s *suite) send(t *testing.T) {
	cl := s.client(t)
	s.c.must(t, "chattyctl", "send", "Warning", "systemd test message")
	readUntil(t, cl, short, func(l string) bool { return strings.Contains(l, "systemd test message") })
}

// reload: systemctl reload applies a changed configuration in place.
func (s *suite) reload(t *testing.T) {
	pid := s.mainPID(t)
	s.c.must(t, "sed", "-i", "s/^  size: 4$/  size: 2/", "/etc/chattyd/chattyd.yaml")
	if out := s.c.must(t, "cat", "/etc/chattyd/chattyd.yaml"); !strings.Contains(out, "  size: 2\n") {
		t.Fatalf("the test could not set pool.size: 2 in the packaged configuration:\n%s", out)
	}
	s.c.must(t, "systemctl", "reload", service)
	s.waitWorkers(t, 2)
	if got := s.mainPID(t); got != pid {
		t.Errorf("reload restarted chattyd: main PID %d, was %d", got, pid)
	}
	poll.Eventually(t, short, func() bool {
		out, _ := s.c.run("journalctl", "--no-pager", "-o", "cat", "_PID="+strconv.Itoa(pid))
		return strings.Contains(out, "Configuration reloaded")
	}, "chattyd did not log the reload")
}

// watchdog: a chattyd that stops pinging is restarted by systemd.
func (s *suite) watchdog(t *testing.T) {
	s.dropIn(t, service, "50-test-watchdog", "[Service]\nEnvironment=CHATTYD_TEST_NO_WATCHDOG=1\nWatchdogSec=2s\n")
	s.c.must(t, "systemctl", "restart", service)
	pid, n := s.mainPID(t), s.restarts(t)
	poll.Eventually(t, long, func() bool { return s.restarts(t) > n }, "systemd did not restart chattyd for its silent watchdog")
	if got := s.mainPID(t); got == pid {
		t.Errorf("chattyd's main PID is still %d after the watchdog restart", got)
	}
	out, _ := s.c.run("journalctl", "--no-pager", "-o", "cat", "-u", service, "--grep", "[Ww]atchdog timeout")
	if !strings.Contains(out, "atchdog timeout") {
		t.Errorf("no watchdog timeout in the journal")
	}
	s.c.removeFile(t, "/run/systemd/system/"+service+".d/50-test-watchdog.conf")
	s.c.must(t, "systemctl", "daemon-reload")
	s.c.must(t, "systemctl", "restart", service)
	s.waitState(t, service, "active", long)
	if got := s.mainPID(t); got == pid || got == 0 {
		t.Errorf("main PID %d after the restart, was %d", got, pid)
	}
}

// kill9: chattyd killed with SIGKILL takes its workers with it, and
// systemd starts it again.
func (s *suite) kill9(t *testing.T) {
	old := s.waitWorkers(t, 2)
	pid, n := s.mainPID(t), s.restarts(t)
	s.c.must(t, "kill", "-KILL", strconv.Itoa(pid))
	poll.Eventually(t, long, func() bool { return s.restarts(t) > n }, "systemd did not restart chattyd after SIGKILL")
	s.waitState(t, service, "active", long)
	for _, w := range old {
		poll.Eventually(t, short, func() bool { return !s.alive(w) }, fmt.Sprintf("worker %d outlived chattyd", w.pid))
	}
	if got := s.mainPID(t); got == pid {
		t.Errorf("chattyd's main PID is still %d", got)
	}
	s.waitWorkers(t, 2)
}

// markedProcs lists the processes in the container, chattyd and its
// guard aside, whose environment has CHATTY_TEST_MARK=mark, with their
// process group and session.
func (s *suite) markedProcs(t *testing.T, mark string) []string {
	t.Helper()
	out, err := s.c.sh(`
for d in /proc/[0-9]*; do
	tr '\0' '\n' <$d/environ 2>/dev/null | grep -qx 'CHATTY_TEST_MARK=` + mark + `' || continue
	args=$(tr '\0' ' ' <$d/cmdline 2>/dev/null) || continue
	case $args in /usr/bin/chattyd*) continue ;; esac
	st=$(cut -d' ' -f3,5,6 $d/stat 2>/dev/null) || continue
	case $st in Z*) continue ;; esac
	echo "${d#/proc/} $st $args"
done`)
	if err != nil {
		t.Fatal(err)
	}
	var ps []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			ps = append(ps, l)
		}
	}
	return ps
}

// kill9Forking: workers that start children, grandchildren and a child
// in a session of its own (setsid), then SIGKILL to chattyd: within 2s
// none of their processes is left, whether or not it left its worker's
// process group. The guard kills the groups; systemd kills the rest of
// the cgroup as the service stops.
func (s *suite) kill9Forking(t *testing.T) {
	const n, perWorker = 2, 5
	s.c.writeFile(t, "/etc/chattyd/test-fork.yaml", `version: 1
broadcast:
  listen: 127.0.0.1:54321
feed:
  source: fifo
  path: /run/chattyd/feed
  on_eof: keep
control:
  socket: /run/chattyd/control.sock
  group: chatty
pool:
  size: 2
  command: ["/bin/sh", "-c", "sleep 1000 & sh -c 'sleep 1001 & exec sleep 1002' & setsid sleep 1003 & exec sleep 1004"]
`)
	defer s.c.removeFile(t, "/etc/chattyd/test-fork.yaml")
	mark := fmt.Sprintf("fork-%d", time.Now().UnixNano())
	s.dropIn(t, service, "50-test-fork", "[Service]\nEnvironment=CHATTY_TEST_MARK="+mark+
		"\nExecStart=\nExecStart=/usr/bin/chattyd --config /etc/chattyd/test-fork.yaml\n")
	s.c.must(t, "systemctl", "restart", service)
	s.waitState(t, service, "active", long)
	var ps []string
	poll.Eventually(t, long, func() bool { ps = s.markedProcs(t, mark); return len(ps) == n*perWorker },
		fmt.Sprintf("want the %d processes of %d forking workers", n*perWorker, n))
	setsid := 0
	before := make(map[string]bool) // by PID
	for _, p := range ps {
		f := strings.Fields(p) // PID state pgrp session args...
		before[f[0]] = true
		if len(f) > 4 && f[2] == f[0] && f[3] == f[0] && strings.Contains(p, "sleep 1003") {
			setsid++ // it leads its own session and group
		}
	}
	if setsid != n {
		t.Fatalf("want %d setsid children, each leading its own session; processes:\n%s", n, strings.Join(ps, "\n"))
	}
	if !slices.ContainsFunc(s.cgroupProcs(t), proc.guard) {
		t.Fatal("no worker guard runs in the cgroup")
	}

	pid, restarts := s.mainPID(t), s.restarts(t)
	s.c.must(t, "kill", "-KILL", strconv.Itoa(pid))
	// The restarted chattyd (RestartSec=2s) starts new ones: only the
	// PIDs seen before the kill count.
	deadline := time.Now().Add(2 * time.Second)
	for {
		left := slices.DeleteFunc(s.markedProcs(t, mark), func(p string) bool { return !before[strings.Fields(p)[0]] })
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("2s after SIGKILL to chattyd, processes of its forking workers still run:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	poll.Eventually(t, long, func() bool { return s.restarts(t) > restarts }, "systemd did not restart chattyd after SIGKILL")
	s.waitState(t, service, "active", long)

	s.c.removeFile(t, "/run/systemd/system/"+service+".d/50-test-fork.conf")
	s.c.must(t, "systemctl", "daemon-reload")
	s.c.must(t, "systemctl", "restart", service)
	s.waitState(t, service, "active", long)
	s.waitWorkers(t, 2)
}

// produce runs the demo producer for a few lines and stops it. The
// producer gets the FIFO as its standard output, and systemd then clears
// O_NONBLOCK on the FIFO's shared file description: chattyd must still
// stop at once afterwards.
func (s *suite) produce(t *testing.T) {
	t.Helper()
	before := s.feedLines(t)
	s.c.must(t, "systemctl", "start", "chattyd-demo-feed.service")
	poll.Eventually(t, short, func() bool { return s.feedLines(t) > before }, "the demo producer's lines do not reach chattyd")
	s.c.must(t, "systemctl", "stop", "chattyd-demo-feed.service")
}

// feedLines returns how many feed lines chattyd has read, from chattyctl status.
func (s *suite) feedLines(t *testing.T) int {
	t.Helper()
	out := s.c.must(t, "chattyctl", "status")
	m := regexp.MustCompile(`(?m)^feed .* (\d+) lines,`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no feed line count in chattyctl status:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// stopped checks that the service stopped cleanly and left nothing behind.
func (s *suite) stopped(t *testing.T, how string) {
	t.Helper()
	s.waitState(t, service, "inactive", long)
	if got := s.show(t, service, "Result"); got != "success" {
		t.Errorf("Result=%s after %s, want success (a clean exit, not a timeout or SIGKILL)", got, how)
	}
	if ps := s.cgroupProcs(t); len(ps) > 0 {
		t.Errorf("processes left in the cgroup after %s: %v", how, ps)
	}
}

// ctlStop: chattyctl stop ends the service cleanly, with nothing left,
// and the service is not started again.
func (s *suite) ctlStop(t *testing.T) {
	s.produce(t)
	n := s.restarts(t)
	start := time.Now()
	s.c.must(t, "chattyctl", "stop")
	s.stopped(t, "chattyctl stop")
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("chattyctl stop took %s", d)
	}
	// Nothing to wait for: systemd applies Restart= as the service stops.
	// A service it is to restart goes from deactivating straight to
	// auto-restart (ActiveState activating) and waits RestartSec there;
	// inactive and dead, which stopped has seen, is the final word.
	if got, sub := s.activeState(t, service), s.show(t, service, "SubState"); got != "inactive" || sub != "dead" || s.restarts(t) != n {
		t.Errorf("after a clean stop chattyd.service is %s (%s) with %d restarts (was %d); Restart=on-failure should not restart it", got, sub, s.restarts(t), n)
	}
}

// systemctlStop: systemctl stop ends chattyd within its stop timeout, with
// nothing left in the cgroup.
func (s *suite) systemctlStop(t *testing.T) {
	s.c.must(t, "systemctl", "start", service)
	s.waitWorkers(t, 2)
	s.produce(t)
	pid := s.mainPID(t)
	s.c.must(t, "systemctl", "stop", service)
	s.stopped(t, "systemctl stop")
	out, _ := s.c.run("journalctl", "--no-pager", "-o", "cat", "_PID="+strconv.Itoa(pid))
	if !strings.Contains(out, "Stopped") {
		t.Errorf("chattyd did not log its clean stop:\n%s", out)
	}
}

// journal: chattyd's and the workers' lines are in the journal, without a
// timestamp of their own in front of the journal's.
func (s *suite) journal(t *testing.T) {
	out := s.c.must(t, "journalctl", "--no-pager", "-o", "cat", "-u", service, "--identifier=chattyd")
	for _, want := range []string{"=== Chatty Server ===", "The TCP server is listening", "[process: 1] Connected to"} {
		if !strings.Contains(out, want) {
			t.Errorf("the journal has no %q from chattyd", want)
		}
	}
	stamp := regexp.MustCompile(`^\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d|time="|"time":`)
	for _, line := range strings.Split(out, "\n") {
		if stamp.MatchString(line) || strings.Contains(line, "] time=") {
			t.Errorf("a journal line carries its own timestamp: %q", line)
		}
	}
}

// signedTLS: the walk-through of docs/systemd.md, "Identity, the signed
// listener and TLS": the service makes its identity, serves a signed
// listener on TLS, and a client that pins the key verifies what it gets.
func (s *suite) signedTLS(t *testing.T) {
	const conf = "/etc/chattyd/chattyd.yaml"
	s.c.must(t, "sed", "-i", "s/^broadcast:$/broadcast:\\n  signed:\\n    listen: 127.0.0.1:54323\\n    tls:\\n      enabled: true\\n      self_signed: true/", conf)
	s.c.must(t, "sh", "-c", "printf 'identity:\\n  generate: true\\n' >> "+conf)
	s.c.must(t, "chattyd", "check-config", conf)
	s.c.must(t, "systemctl", "restart", service)
	s.waitState(t, service, "active", long)
	s.waitWorkers(t, 2)

	const key = "/var/lib/chattyd/identity.key"
	if out := s.c.must(t, "stat", "-c", "%a %U", key); strings.TrimSpace(out) != "600 chattyd" {
		t.Errorf("%s: mode and owner %q, want 600 chattyd", key, strings.TrimSpace(out))
	}
	fp := s.c.must(t, "chattyctl", "identity")
	if !strings.Contains(fp, "SHA256:") {
		t.Fatalf("chattyctl identity: %q", fp)
	}
	if out := s.c.must(t, "chattyctl", "status", "--json"); !strings.Contains(out, "127.0.0.1:54323") {
		t.Errorf("status does not show the signed listener:\n%s", out)
	}
	// A pinned, verifying client gets a sent message; the loop polls
	// until the watch, started first, has connected.
	script := `chattyctl watch --signed --tls --pin ` + key + `.pub --pubkey ` + key + `.pub > /tmp/signed.out 2>&1 &
for i in $(seq 200); do
  chattyctl send Info signed-walkthrough >/dev/null
  grep -q signed-walkthrough /tmp/signed.out && { kill %1; exit 0; }
  sleep 0.1
done
cat /tmp/signed.out; exit 1`
	if out, err := s.c.runTimeout(long, "bash", "-c", script); err != nil {
		t.Fatalf("the signed, pinned watch got nothing: %v\n%s", err, out)
	}
	s.c.must(t, "systemctl", "stop", service)
}

// removePurge: removing the package stops everything; purging removes
// the configuration and state.
func (s *suite) removePurge(t *testing.T) {
	s.c.must(t, "systemctl", "start", service)
	s.waitState(t, service, "active", long)
	out, err := s.c.run("dpkg", "--remove", "chatty")
	t.Logf("dpkg --remove:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range append(slices.Clone(sockets), service) {
		if got := s.activeState(t, u); got != "inactive" {
			t.Errorf("%s is %s after removal, want inactive", u, got)
		}
	}
	if _, err := s.c.run("test", "-e", "/run/chattyd/control.sock"); err == nil {
		t.Errorf("the control socket outlived the package")
	}
	if _, err := s.c.run("test", "-e", "/usr/bin/chattyd"); err == nil {
		t.Errorf("/usr/bin/chattyd outlived the package")
	}
	if _, err := s.c.run("test", "-e", "/etc/chattyd/chattyd.yaml"); err != nil {
		t.Errorf("removal (not purge) took the configuration file")
	}
	if _, err := s.c.run("dpkg", "--purge", "chatty"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/etc/chattyd/chattyd.yaml", "/var/lib/chattyd"} {
		if _, err := s.c.run("test", "-e", p); err == nil {
			t.Errorf("%s outlived the purge", p)
		}
	}
}
