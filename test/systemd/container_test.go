//go:build linux

package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
	"golang.org/x/sys/unix"
)

// container is a systemd booted by systemd-nspawn on the host's own /usr
// with an empty, volatile root. Everything it writes to /usr lands in an
// overlay directory of the test's, so the host is left as it was.
type container struct {
	t      *testing.T
	name   string
	dir    string // the test's directory: overlay, dpkg database, package
	leader int    // the container's PID 1, as the host sees it
	nspawn *exec.Cmd
	out    *harness.Output // nspawn's and the container's console
	exited chan struct{}
	// cgroupDirs are the cgroup directories nspawn creates (payload,
	// supervisor) that did not exist before; they are removed at the end.
	cgroupDirs []string
	// nspawnRun is /run/systemd/nspawn if the test created it.
	nspawnRun string
}

// bootContainer boots the container with pkgDir bound read-only at
// /srv/chatty-test. It skips the test when nspawn cannot run here at all
// and stops the container, and removes what it made, when the test ends.
func bootContainer(t *testing.T, pkgDir string) *container {
	t.Helper()
	// Under CI, which runs make systemd-test as root on purpose, a skip
	// would pass the suite untested: it fails instead.
	skip := t.Skip
	skipf := t.Skipf
	if os.Getenv("CI") == "true" {
		skip, skipf = t.Fatal, t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("systemd-nspawn needs root; run make systemd-test as root")
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		skip("systemd-nspawn is not installed (apt-get install systemd-container)")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		skip("nsenter is not installed (util-linux)")
	}
	if _, err := os.Stat("/usr/lib/systemd/systemd"); err != nil {
		skip("the host has no systemd in /usr to boot: " + err.Error())
	}

	c := &container{
		t:      t,
		name:   fmt.Sprintf("chatty-test-%d", os.Getpid()),
		dir:    t.TempDir(),
		out:    harness.NewOutput(),
		exited: make(chan struct{}),
	}
	// The container's dpkg starts from a copy of the host's database, so
	// that the package's dependencies are known. statoverride names
	// groups the empty /etc lacks; dpkg would refuse to run.
	dpkgDir := filepath.Join(c.dir, "dpkg")
	if out, err := exec.Command("cp", "-a", "/var/lib/dpkg", dpkgDir).CombinedOutput(); err != nil {
		t.Fatalf("copy the dpkg database: %v\n%s", err, out)
	}
	for _, f := range []string{"statoverride", "lock", "lock-frontend"} {
		os.Remove(filepath.Join(dpkgDir, f))
	}
	if err := os.WriteFile(filepath.Join(dpkgDir, "statoverride"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A Docker-built host often has a policy-rc.d that forbids starting
	// services; the container's maintainer scripts must be allowed to.
	upper := filepath.Join(c.dir, "usr")
	if err := os.MkdirAll(filepath.Join(upper, "sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(upper, "sbin", "policy-rc.d"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	c.noteCgroupDirs()
	if _, err := os.Stat("/run/systemd/nspawn"); errors.Is(err, fs.ErrNotExist) {
		c.nspawnRun = "/run/systemd/nspawn"
	}

	// timeout bounds the container's life even if the test binary dies
	// without running its cleanup: nspawn powers the container off on
	// SIGTERM.
	c.nspawn = exec.Command("timeout", "--kill-after=30", strconv.Itoa(int(maxLife.Seconds())), "systemd-nspawn",
		"--directory=/", "--volatile=yes", "--register=no", "--keep-unit",
		"--private-network", "--console=passive", "--machine="+c.name,
		// /usr is read-only, so files cannot be bound onto new paths in
		// it: an overlay whose upper layer is the test's takes dpkg's
		// writes instead.
		"--overlay=/usr:"+upper+":/usr",
		"--bind="+dpkgDir+":/var/lib/dpkg",
		"--bind-ro="+pkgDir+":/srv/chatty-test")
	// The volatile /etc is empty; man(1), which systemd-analyze verify
	// runs for Documentation=man:, needs its configuration.
	if _, err := os.Stat("/etc/manpath.config"); err == nil {
		c.nspawn.Args = append(c.nspawn.Args, "--bind-ro=/etc/manpath.config")
	}
	c.nspawn.Args = append(c.nspawn.Args, "--boot", "--", "systemd.firstboot=off")
	c.nspawn.Stdin = nil
	c.nspawn.Stdout = c.out
	c.nspawn.Stderr = c.out
	if err := c.nspawn.Start(); err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	go func() {
		c.nspawn.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.cleanup)

	leader, err := c.findLeader(30 * time.Second)
	if err != nil {
		select {
		case <-c.exited:
			skipf("systemd-nspawn cannot boot a container here: %v\n%s", err, c.out.String())
		default:
		}
		t.Fatalf("%v\n%s", err, c.out.String())
	}
	c.leader = leader

	// Until its manager is up, systemctl cannot connect and answers
	// "offline" or nothing at once.
	var state string
	for boot := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		state, err = c.runTimeout(90*time.Second, "systemctl", "is-system-running", "--wait")
		state = strings.TrimSpace(state)
		if (state != "offline" && state != "") || time.Since(boot) > 90*time.Second {
			break
		}
	}
	if state != "running" && state != "degraded" {
		t.Fatalf("the container's systemd did not come up: %q, %v\n%s", state, err, c.out.String())
	}
	if state == "degraded" {
		failed, _ := c.run("systemctl", "--failed", "--no-legend")
		t.Logf("the container booted degraded; failed units:\n%s", failed)
	}
	return c
}

// maxLife is how long the container may live at most.
const maxLife = 10 * time.Minute

// findLeader waits for a descendant of nspawn to become systemd.
func (c *container) findLeader(timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return 0, fmt.Errorf("systemd-nspawn exited: %v", c.nspawn.ProcessState)
		default:
		}
		if pid := findDescendant(c.nspawn.Process.Pid, "systemd", 3); pid > 0 {
			return pid, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, errors.New("the container's systemd did not start")
}

// findDescendant returns the first descendant of pid, at most depth
// generations down, whose command name is comm; 0 if none.
func findDescendant(pid int, comm string, depth int) int {
	if depth == 0 {
		return 0
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, f := range strings.Fields(string(b)) {
			child, _ := strconv.Atoi(f)
			name, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child))
			if strings.TrimSpace(string(name)) == comm {
				return child
			}
			if p := findDescendant(child, comm, depth-1); p > 0 {
				return p
			}
		}
	}
	return 0
}

// run runs a command inside the container and returns its standard output;
// the error includes its standard error.
func (c *container) run(args ...string) (string, error) {
	return c.runTimeout(time.Minute, args...)
}

func (c *container) runTimeout(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "TERM=dumb",
		"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "DEBIAN_FRONTEND=noninteractive"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), err
}

// must runs a command inside the container and fails t if it fails.
func (c *container) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sh runs a shell script inside the container.
func (c *container) sh(script string) (string, error) {
	return c.run("sh", "-euc", script)
}

// writeFile writes a file inside the container (through its root, as
// the host sees it), creating the directories.
func (c *container) writeFile(t *testing.T, path, content string) {
	t.Helper()
	p := filepath.Join(fmt.Sprintf("/proc/%d/root", c.leader), path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// removeFile removes a file inside the container.
func (c *container) removeFile(t *testing.T, path string) {
	t.Helper()
	p := filepath.Join(fmt.Sprintf("/proc/%d/root", c.leader), path)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

// dial connects to addr in the container's network namespace. The socket
// is made by a thread that joins that namespace and is then thrown away
// (its goroutine ends locked to it), so no other goroutine runs there.
func (c *container) dial(addr string) (*net.TCPConn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", c.leader))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("join the container's network namespace: %w", err)}
			return
		}
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		ch <- result{conn, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return r.conn.(*net.TCPConn), nil
}

// cgroupRoots returns the cgroup directories the test process is in, on
// every hierarchy nspawn uses (cgroup2, and name=systemd on a hybrid host).
func cgroupRoots() []string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	var roots []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			for _, mnt := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
				if _, err := os.Stat(filepath.Join(mnt, "cgroup.procs")); err == nil {
					roots = append(roots, filepath.Join(mnt, f[2]))
					break
				}
			}
		case f[1] == "name=systemd":
			roots = append(roots, filepath.Join("/sys/fs/cgroup/systemd", f[2]))
		}
	}
	return roots
}

// noteCgroupDirs records the cgroup directories nspawn will create, unless
// they exist already.
func (c *container) noteCgroupDirs() {
	for _, root := range cgroupRoots() {
		for _, sub := range []string{"payload", "supervisor"} {
			d := filepath.Join(root, sub)
			if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
				c.cgroupDirs = append(c.cgroupDirs, d)
			}
		}
	}
}

// cleanup powers the container off (or kills it), then removes the cgroup
// directories and runtime files nspawn left behind.
func (c *container) cleanup() {
	if c.leader > 0 && c.t.Failed() {
		out, _ := c.run("journalctl", "--no-pager", "-o", "short-monotonic", "-u", "chattyd*")
		c.t.Logf("the container's journal for chattyd*:\n%s", out)
	}
	if c.leader > 0 {
		c.runTimeout(10*time.Second, "systemctl", "poweroff", "--no-block")
	}
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.t.Logf("the container did not power off; killing it")
		if c.leader > 0 {
			unix.Kill(c.leader, unix.SIGKILL)
		}
		c.nspawn.Process.Signal(unix.SIGTERM) // timeout passes it to nspawn
		<-c.exited
	}
	if c.t.Failed() {
		c.t.Logf("container console:\n%s", c.out.String())
	}
	for _, d := range c.cgroupDirs {
		removeCgroupTree(c.t, d)
	}
	os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", c.name))
	if c.nspawnRun != "" {
		os.Remove(filepath.Join(c.nspawnRun, "propagate"))
		os.Remove(c.nspawnRun)
	}
}

// removeCgroupTree removes an empty cgroup directory and its children,
// deepest first (cgroup directories go with rmdir, not unlink).
func removeCgroupTree(t *testing.T, dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			t.Logf("remove cgroup %s: %v", dirs[i], err)
		}
	}
}
