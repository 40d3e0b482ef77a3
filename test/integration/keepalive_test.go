package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chatty-dev/chatty/test/harness"
)

// A client that never sends a byte (nc watching the feed) outlives
// idle_timeout, while one that kept alive once and went silent is closed;
// when the silent client's packets are then dropped (a vanished peer),
// TCP keep-alive closes it within idle + interval*count. chattyd and the
// clients run in a network namespace of the test's own, on its loopback,
// where an nft rule drops the packets.
func TestSilentClientKeptUntilPeerVanishes(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	const keepAliveBound = 3 * time.Second // idle 1s + interval 1s * count 2
	var d *harness.Daemon
	ns.run(t, func() {
		d = harness.StartDaemon(t, harness.Options{Config: config("broadcast:\n  idle_timeout: 300ms\n" +
			"  tcp_keepalive: {idle: 1s, interval: 1s, count: 2}\n")})
	})
	var silent, speaker *harness.Client
	ns.run(t, func() {
		silent = harness.Dial(t, d.Addr())  // connection 1: never sends a byte
		speaker = harness.Dial(t, d.Addr()) // connection 2: keeps alive once
	})
	// Lines fed from now on are owed to both.
	d.WaitLog(t, "[connection: 2] New connection established", short)
	d.Feed("first")
	if got := silent.ReadLine(short); got != "first" {
		t.Fatalf("silent client got %q", got)
	}
	if got := speaker.ReadLine(short); got != "first" {
		t.Fatalf("speaker got %q", got)
	}
	speaker.KeepAlive(short)
	// The speaker connected after the silent client: its close for
	// idleness shows that the sweep ran past the silent one's deadline.
	speakerClosed := closedAt(speaker)
	select {
	case <-speakerClosed:
	case <-time.After(long):
		t.Fatal("the client that kept alive once was not closed at idle_timeout")
	}
	d.WaitLogRE(t, regexp.MustCompile(`\[connection: 2\] Connection closed .*reason="idle timeout"`), short)
	d.Feed("after idle timeouts")
	if got := silent.ReadLine(short); got != "after idle timeouts" {
		t.Fatalf("silent client got %q, want the line fed after the idle close", got)
	}
	if strings.Contains(d.Log(), "[connection: 1] Connection closed") {
		t.Fatal("the silent client was closed")
	}

	// The silent client's peer vanishes: every packet to or from its port
	// is dropped from now on.
	port := silent.Conn().LocalAddr().(*net.TCPAddr).Port
	ns.nft(t, "add table inet chattytest")
	ns.nft(t, "add chain inet chattytest out { type filter hook output priority 0; }")
	ns.nft(t, fmt.Sprintf("add rule inet chattytest out tcp sport %d drop", port))
	ns.nft(t, fmt.Sprintf("add rule inet chattytest out tcp dport %d drop", port))
	dropped := time.Now()
	d.WaitLogRE(t, regexp.MustCompile(`\[connection: 1\] Connection closed .*reason="i/o error"`), keepAliveBound+short)
	if took := time.Since(dropped); took > keepAliveBound+2*time.Second {
		t.Errorf("the vanished client was closed %s after its packets were dropped; want within about %s", took, keepAliveBound)
	}
	if st := status(t, d); st.Clients.Connected != 0 {
		t.Errorf("%d clients connected, want none", st.Clients.Connected)
	}
}

// netns is a network namespace the test made, with its loopback up.
type netns struct{ name string }

// newNetns makes a network namespace, removed when the test ends. It
// needs root, ip and nft; without them the test skips, or fails under
// CI=true (.ci/run installs iproute2 and nftables and runs as root).
func newNetns(t *testing.T) *netns {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("a network namespace needs %s, and CI=true (.ci/run runs as root and installs iproute2 and nftables)", strings.Join(missing, ", "))
		}
		t.Skipf("a network namespace needs %s", strings.Join(missing, ", "))
	}
	ns := &netns{name: fmt.Sprintf("chattytest-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)}
	ipCmd(t, "netns", "add", ns.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	ipCmd(t, "-n", ns.name, "link", "set", "lo", "up")
	return ns
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// nft runs an nft command in the namespace.
func (ns *netns) nft(t *testing.T, command string) {
	t.Helper()
	args := append([]string{"netns", "exec", ns.name, "nft"}, strings.Fields(command)...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("nft %s: %v: %s", command, err, out)
	}
}

// run calls f on a thread that joined the namespace: the sockets it makes
// and the processes it starts are in it. The thread is thrown away after
// (its goroutine ends locked to it), so no other goroutine runs there.
func (ns *netns) run(t *testing.T, f func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := os.Open("/run/netns/" + ns.name)
		if err != nil {
			errc <- err
			return
		}
		defer fd.Close()
		if err := unix.Setns(int(fd.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("join network namespace %s: %w", ns.name, err)
			return
		}
		ok := false
		defer func() {
			if !ok {
				errc <- errors.New("failed in the network namespace (see above)")
			}
		}()
		f()
		ok = true
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
