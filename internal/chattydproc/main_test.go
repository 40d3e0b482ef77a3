package chattydproc_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

const timeout = 20 * time.Second

// start starts chattyd with a fresh control socket and a configuration,
// and kills its group when the test ends.
func start(t *testing.T, sock, config string, args ...string) *chattydproc.Process {
	t.Helper()
	bins := harness.BuildBinaries(t)
	cfg := filepath.Join(t.TempDir(), "chattyd.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := chattydproc.Start(chattydproc.Options{
		Bin:           bins.Chattyd,
		ControlSocket: sock,
		Args:          append([]string{"--config", cfg}, args...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.KillGroup()
		<-p.Done()
	})
	return p
}
