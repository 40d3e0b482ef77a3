// Package natscluster runs a real three-node nats-server cluster on
// loopback for chatty's tests and benchmarks: it installs nats-server
// (the version chatty depends on) into a cache directory, starts three
// nodes with routes between them, and kills and restarts them.
//
// Every process it starts belongs to the test that started it and is
// killed and reaped when that test ends.
package natscluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// Version is the nats-server installed: the one go.mod requires.
const Version = "v2.15.3"

// Module is nats-server's module path.
const Module = "github.com/nats-io/nats-server/v2"

var install struct {
	once sync.Once
	path string
	err  error
}

// CacheDir is where nats-server is installed: $CHATTY_NATS_CACHE, else
// chatty/nats-server-VERSION in the user's cache directory.
func CacheDir() (string, error) {
	if d := os.Getenv("CHATTY_NATS_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "chatty", "nats-server-"+Version), nil
}

// Install returns the path of nats-server Version, installing it with
// `go install` into CacheDir the first time.
func Install() (string, error) {
	install.once.Do(func() { install.path, install.err = doInstall() })
	return install.path, install.err
}

func doInstall() (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server")
	if out, err := exec.Command(bin, "--version").Output(); err == nil && strings.Contains(string(out), Version) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cmd := exec.Command("go", "install", Module+"@"+Version)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w\n%s", Module, Version, err, out)
	}
	return bin, nil
}

// T is what the cluster needs of its owner: a *testing.T, or Main for a
// program such as a benchmark.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	TempDir() string
	Cleanup(func())
	Failed() bool
}

var _ T = testing.TB(nil)

// Node is one nats-server of the cluster.
type Node struct {
	Name       string
	ClientAddr string // 127.0.0.1:port of clients
	RouteAddr  string // 127.0.0.1:port of routes

	c      *Cluster
	config string
	mu     sync.Mutex // guards cmd, done
	cmd    *exec.Cmd
	done   chan struct{}   // closed when cmd has been reaped
	out    *harness.Output // every run's output
}

// Cluster is three nats-server nodes with routes to each other.
type Cluster struct {
	Nodes []*Node
	tb    T
	bin   string
	cpus  string // taskset's CPU list for every node; "" is any CPU
	pids  []int  // every process started, for the end's check
	mu    sync.Mutex
}

// freePort returns a loopback address that nothing listens on now; see
// harness.FreeLoopbackAddr.
func freePort(tb T) string {
	tb.Helper()
	addr, err := harness.FreeLoopbackAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// Start installs nats-server if needed and starts three nodes with
// JetStream on file stores in the test's temporary directory. It returns
// once every node takes clients; the cluster may still be electing its
// meta leader. When the test ends every node is killed and reaped, and
// the test fails if any of its processes is left.
func Start(tb T) *Cluster {
	tb.Helper()
	return StartOn(tb, "")
}

// StartOn is Start with every node run by taskset on the CPUs of the
// list cpus (as taskset -c takes it, such as "1"); "" is any CPU. A
// benchmark gives the cluster CPUs of its own this way.
func StartOn(tb T, cpus string) *Cluster {
	tb.Helper()
	bin, err := Install()
	if err != nil {
		tb.Fatal(err)
	}
	c := &Cluster{tb: tb, bin: bin, cpus: cpus}
	dir := tb.TempDir()
	for i := range 3 {
		c.Nodes = append(c.Nodes, &Node{Name: fmt.Sprintf("n%d", i+1), ClientAddr: freePort(tb), RouteAddr: freePort(tb), c: c, out: harness.NewOutput()})
	}
	for _, n := range c.Nodes {
		var routes []string
		for _, o := range c.Nodes {
			if o != n {
				routes = append(routes, "nats://"+o.RouteAddr)
			}
		}
		store := filepath.Join(dir, n.Name)
		n.config = filepath.Join(dir, n.Name+".conf")
		conf := fmt.Sprintf(`server_name: %s
listen: %s
jetstream {
  store_dir: %q
}
cluster {
  name: chatty-test
  listen: %s
  routes: [%s]
}
`, n.Name, n.ClientAddr, store, n.RouteAddr, strings.Join(routes, ", "))
		if err := os.WriteFile(n.config, []byte(conf), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(c.stop)
	for _, n := range c.Nodes {
		n.Start()
	}
	return c
}

// URLs returns the client URLs of every node, comma-separated.
func (c *Cluster) URLs() string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, "nats://"+n.ClientAddr)
	}
	return strings.Join(us, ",")
}

// URLList returns the client URLs of every node.
func (c *Cluster) URLList() []string { return strings.Split(c.URLs(), ",") }

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Start starts the node (again), and waits until it takes clients.
func (n *Node) Start() {
	tb := n.c.tb
	tb.Helper()
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		tb.Fatalf("node %s is already running", n.Name)
	}
	cmd := exec.Command(n.c.bin, "-c", n.config)
	if n.c.cpus != "" {
		// taskset execs nats-server in its own process: the pid is the
		// server's, for Pid, Kill and the CPU time read from /proc.
		cmd = exec.Command("taskset", "-c", n.c.cpus, n.c.bin, "-c", n.config)
	}
	cmd.Stdout, cmd.Stderr = n.out, n.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		tb.Fatalf("start nats-server %s: %v", n.Name, err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	n.c.mu.Lock()
	n.c.pids = append(n.c.pids, cmd.Process.Pid)
	n.c.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()

	err := poll.Until(context.Background(), 20*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		conn, err := net.DialTimeout("tcp", n.ClientAddr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	select {
	case <-done:
		tb.Fatalf("nats-server %s exited at start:\n%s", n.Name, n.Output())
	default:
	}
	if err != nil {
		tb.Fatalf("nats-server %s does not take clients on %s: %v\n%s", n.Name, n.ClientAddr, err, n.Output())
	}
}

// Kill sends SIGKILL to the node and waits until it is reaped.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.c.tb.Errorf("nats-server %s not reaped 10s after SIGKILL", n.Name)
	}
}

// Pid returns the node's process id; 0 when it does not run.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running reports whether the node's process runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Output returns what the node printed.
func (n *Node) Output() string { return n.out.String() }

// stop kills every node and checks that no process started is left.
func (c *Cluster) stop() {
	for _, n := range c.Nodes {
		n.Kill()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pid := range c.pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			c.tb.Errorf("nats-server process %d is still there after the test (kill: %v)", pid, err)
		}
	}
	if c.tb.Failed() {
		for _, n := range c.Nodes {
			out, retries := withoutRouteRetries(n.Output())
			c.tb.Logf("nats-server %s output (last 8 KiB, %d route retries left out):\n%s", n.Name, retries, tail(out, 8192))
		}
	}
}

// withoutRouteRetries drops the line a node logs each second while a
// killed peer is down, which would otherwise fill the output's tail.
func withoutRouteRetries(s string) (string, int) {
	var b strings.Builder
	n := 0
	for line := range strings.Lines(s) {
		if strings.Contains(line, "Error trying to connect to route") {
			n++
			continue
		}
		b.WriteString(line)
	}
	return b.String(), n
}

// tail returns the whole lines that end s, at most n bytes of them.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
