package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
)

// watchSignedUntil runs chattyctl watch --signed on d with args until
// its state file names message last of stream, then interrupts it; it
// returns what it printed on stdout and stderr.
func watchSignedUntil(t *testing.T, d *harness.Daemon, pubFile, state, stream string, last int, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(harness.BuildBinaries(t).Chattyctl,
		append([]string{"--socket", d.ControlSocket(), "watch", "--signed", "--pubkey", pubFile, "--state", state}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s %d\n", stream, last)
	deadline := time.Now().Add(long)
	for {
		if b, _ := os.ReadFile(state); string(b) == want {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the state file never named %q; stderr: %s", want, errOut.String())
		}
		time.Sleep(10 * time.Millisecond) // polls a file another process writes
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watch: %v; stderr: %s", err, errOut.String())
	}
	return out.String(), errOut.String()
}

// chattyctl watch --signed --state against chattyd: a watch started again
// goes on exactly after the last message it printed, verified; after a
// restart of chattyd (a new stream) it is told, signed, and prints the new
// stream from its start rather than other messages under its numbers.
func TestSignedWatchStateAcrossReconnectsAndRestart(t *testing.T) {
	d, _, _, pubFile := startSignedDaemon(t, "chained", "")
	lines := numbered("signed-state", 1, 3000, 60)
	d.Feed(lines[:2000]...)
	stream := streamOf(t, d).ID
	state := filepath.Join(t.TempDir(), "watch.state")

	out, errOut := watchSignedUntil(t, d, pubFile, state, stream, 2000, "--from", "first")
	if want := string(joinLines(lines[:2000])); out != want {
		t.Fatalf("first watch printed %d bytes, want %d; stderr %s", len(out), len(want), errOut)
	}
	d.Feed(lines[2000:]...)
	out, errOut = watchSignedUntil(t, d, pubFile, state, stream, 3000)
	if want := string(joinLines(lines[2000:])); out != want {
		t.Fatalf("watch started again printed %q..., want lines 2001 to 3000; stderr %s", out[:min(len(out), 80)], errOut)
	}

	// A chattyd restarted on the same configuration is another stream.
	d.Signal(os.Interrupt)
	if code := d.Wait(long); code != 0 {
		t.Fatalf("chattyd exited %d", code)
	}
	d, _, _, pubFile = startSignedDaemon(t, "chained", "")
	after := numbered("after-restart", 1, 10, 0)
	d.Feed(after...)
	now := streamOf(t, d).ID
	if now == stream {
		t.Fatalf("a restarted chattyd kept the stream id %s", stream)
	}
	out, errOut = watchSignedUntil(t, d, pubFile, state, now, 10)
	if out != string(joinLines(after)) || !strings.Contains(errOut, "not "+stream) {
		t.Fatalf("after the restart: printed %q; stderr %s", out, errOut)
	}
}
