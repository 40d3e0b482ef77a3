package integration

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
)

// demoFeed runs chattyd demo-feed to its end and returns its stdout,
// stderr and how long it took.
func demoFeed(t *testing.T, bin string, args ...string) (string, string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), long)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"demo-feed"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo-feed %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String(), time.Since(start)
}

// demo-feed --wait-clients holds the feed back until chattyd, asked on its
// control socket, has that many clients; after --wait-timeout it starts
// anyway and says why on stderr.
func TestDemoFeedWaitsForClients(t *testing.T) {
	t.Parallel()
	bins := harness.BuildBinaries(t)
	d := harness.StartDaemon(t, harness.Options{Config: config("")})
	sock := d.ControlSocket()
	c1 := harness.Dial(t, d.Addr())
	defer c1.Close()
	waitStatus(t, sock, "one client", func(st wireStatus) bool { return st.Clients.Connected == 1 })

	// One client of two: it waits the whole timeout, then starts.
	out, errOut, took := demoFeed(t, bins.Chattyd, "--wait-clients", "2", "--wait-timeout", "300ms",
		"--control-socket", sock, "--rate", "0", "--count", "3")
	if took < 300*time.Millisecond {
		t.Errorf("demo-feed started after %s, before --wait-timeout 300ms, with 1 client of 2", took)
	}
	if want := "starting anyway after 300ms without 2 clients connected (chattyd had 1)"; !strings.Contains(errOut, want) {
		t.Errorf("demo-feed's stderr = %q, want it to say %q", errOut, want)
	}
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("demo-feed printed %d lines after the timeout, want 3:\n%s", n, out)
	}

	// Two clients: it starts without waiting for the timeout or a word.
	c2 := harness.Dial(t, d.Addr())
	defer c2.Close()
	waitStatus(t, sock, "two clients", func(st wireStatus) bool { return st.Clients.Connected == 2 })
	out, errOut, took = demoFeed(t, bins.Chattyd, "--wait-clients", "2", "--wait-timeout", "60s",
		"--control-socket", sock, "--rate", "0", "--count", "3")
	if errOut != "" || strings.Count(out, "\n") != 3 || took > long/2 {
		t.Errorf("with 2 clients connected demo-feed took %s, printed %q and said %q; want 3 lines at once and nothing on stderr", took, out, errOut)
	}

	// No chattyd on the socket: it says so once the timeout has passed.
	_, errOut, _ = demoFeed(t, bins.Chattyd, "--wait-clients", "1", "--wait-timeout", "100ms",
		"--control-socket", t.TempDir()+"/none.sock", "--count", "1")
	if !strings.Contains(errOut, "starting anyway") || !strings.Contains(errOut, "did not answer on") {
		t.Errorf("demo-feed with no chattyd said %q, want that it did not answer and it starts anyway", errOut)
	}
}

// A negative number of clients to wait for is a usage error, not a start
// at once.
func TestDemoFeedRefusesNegativeWait(t *testing.T) {
	t.Parallel()
	r := harness.Run(t, short, "demo-feed", "--wait-clients", "-1", "--count", "1")
	if r.Code != 2 || !strings.Contains(r.Stderr, "--wait-clients -1") || r.Stdout != "" {
		t.Errorf("demo-feed --wait-clients -1: exit %d, stdout %q, stderr %q; want exit 2, nothing printed, the flag named", r.Code, r.Stdout, r.Stderr)
	}
}
