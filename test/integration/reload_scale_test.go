package integration

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"

	"github.com/chatty-dev/chatty/test/harness"
)

// A reload changes the pool's size only when pool.size changed in the
// file: one made for another setting keeps what chattyctl scale set.
func TestReloadKeepsScaleUnlessPoolSizeChanged(t *testing.T) {
	t.Parallel()
	const cfg = "version: 1\npool:\n  size: %d\n  worker:\n    lifetime_min: 1h\n    lifetime_max: 1h\nlog:\n  level: %s\n"
	d := harness.StartDaemon(t, harness.Options{Config: fmt.Sprintf(cfg, 2, "info")})
	d.WaitWorkers(t, 2, long)

	ctl := harness.BuildBinaries(t).Chattyctl
	if out, err := exec.Command(ctl, "--socket", d.ControlSocket(), "scale", "4").CombinedOutput(); err != nil {
		t.Fatalf("chattyctl scale 4: %v\n%s", err, out)
	}
	d.WaitWorkers(t, 4, long)

	mark := d.LogLen()
	d.WriteConfig(fmt.Sprintf(cfg, 2, "debug")) // pool.size unchanged
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, mark, "Configuration reloaded", short)
	if ws := d.Workers(t); len(ws) != 4 {
		t.Fatalf("after a reload that left pool.size alone: %d workers, want the 4 chattyctl set", len(ws))
	}

	mark = d.LogLen()
	d.WriteConfig(fmt.Sprintf(cfg, 3, "debug"))
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, mark, "Configuration reloaded", short)
	d.WaitWorkers(t, 3, long)
}
