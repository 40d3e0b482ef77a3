package chattydproc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/test/harness"
)

// withTLS is a configuration with the text listener on a port the kernel
// chooses and a TLS listener: its address, certificate and key files.
const withTLS = `version: 1
pool:
  size: 0
broadcast:
  listen: 127.0.0.1:0
  tls:
    listen: %s
    cert_file: %s
    key_file: %s
`

// Addrs reports the bound address of every listener chattyd runs, the
// kernel's choice of port included, as /v1/status has it.
func TestAddrs(t *testing.T) {
	t.Parallel()
	// The TLS listener's address must differ from broadcast.listen.
	tlsAddr, pki := harness.FreeAddr(t), harness.NewPKI(t)
	sock := filepath.Join(harness.SocketDir(t), "control.sock")
	p := start(t, sock, fmt.Sprintf(withTLS, tlsAddr, pki.CertFile, pki.KeyFile))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	addrs, err := p.Addrs(ctx, timeout)
	if err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"text": addrs.Text, "TLS": addrs.TLS} {
		if strings.HasSuffix(addr, ":0") || !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("%s listener at %q, want 127.0.0.1 and the port bound", name, addr)
			continue
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Errorf("%s listener: %v", name, err)
			continue
		}
		c.Close()
	}
	if addrs.TLS != tlsAddr {
		t.Errorf("TLS listener at %q, want %s", addrs.TLS, tlsAddr)
	}
	if addrs.Signed != "" {
		t.Errorf("signed listener at %q, but none is configured", addrs.Signed)
	}

	// Stop ends chattyd, which exits 0 on SIGTERM.
	p.Stop(10 * time.Second)
	if !p.Exited() || p.ExitCode() != 0 {
		t.Errorf("after Stop: exited %v, exit status %d, want 0", p.Exited(), p.ExitCode())
	}
}

// A chattyd that fails to start makes Ready fail at once with its exit
// status, rather than time out.
func TestReadyExited(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(harness.SocketDir(t), "control.sock")
	p := start(t, sock, "version: 1\nno_such_field: 1\n")
	t0 := time.Now()
	_, err := p.Ready(context.Background(), timeout)
	if err == nil || !strings.Contains(err.Error(), "exited with status 1") {
		t.Fatalf("Ready on a chattyd with a bad configuration: %v, want its exit status 1", err)
	}
	if d := time.Since(t0); d > timeout/2 {
		t.Errorf("Ready took %s to notice chattyd had exited", d)
	}
}

// Ready does not take another chattyd's answer on the same socket for
// this one's: this one refuses the socket and exits.
func TestReadyOtherDaemon(t *testing.T) {
	t.Parallel()
	const cfg = "version: 1\npool:\n  size: 0\nbroadcast:\n  listen: 127.0.0.1:0\n"
	sock := filepath.Join(harness.SocketDir(t), "control.sock")
	first := start(t, sock, cfg)
	if _, err := first.Ready(context.Background(), timeout); err != nil {
		t.Fatal(err)
	}
	second := start(t, sock, cfg)
	st, err := second.Ready(context.Background(), timeout)
	if err == nil {
		t.Fatalf("Ready of a chattyd refused the socket returned the status of process %d (the first is %d, the second %d)", st.PID, first.PID(), second.PID())
	}
	if !second.Exited() {
		t.Errorf("Ready failed while the second chattyd still runs: %v", err)
	}
	if first.Exited() {
		t.Error("the first chattyd exited")
	}
}

// Without a control socket Ready says what is missing.
func TestReadyNoSocket(t *testing.T) {
	t.Parallel()
	p := start(t, "", "version: 1\npool:\n  size: 0\nbroadcast:\n  listen: 127.0.0.1:0\ncontrol:\n  socket: "+
		filepath.Join(harness.SocketDir(t), "control.sock")+"\n")
	if _, err := p.Ready(context.Background(), timeout); err == nil || !strings.Contains(err.Error(), "Options.ControlSocket") {
		t.Errorf("Ready without a control socket: %v", err)
	}
	if _, err := p.Wait(10 * time.Millisecond); !errors.Is(err, chattydproc.ErrRunning) {
		t.Errorf("Wait on a running chattyd: %v, want ErrRunning", err)
	}
}
