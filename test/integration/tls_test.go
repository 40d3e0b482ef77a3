package integration

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/test/harness"
)

// chattyd serves the same feed on its plain listener and, over TLS 1.3
// with client certificates, on its TLS listener; a client without a
// certificate from the configured CA receives nothing.
func TestTLSListener(t *testing.T) {
	t.Parallel()
	pki := harness.NewPKI(t)
	d := harness.StartDaemon(t, harness.Options{Config: fmt.Sprintf(`version: 1
pool:
  size: 0
broadcast:
  tls:
    listen: 127.0.0.1:0
    cert_file: %s
    key_file: %s
    client_ca_file: %s
`, pki.CertFile, pki.KeyFile, pki.CAFile)})
	tlsAddr := d.Addrs().TLS
	d.WaitLog(t, "The TLS listener is on "+tlsAddr, short)

	plain := harness.Dial(t, d.Addr())
	plain.KeepAlive(short)
	conn, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pki.CA, Certificates: []tls.Certificate{pki.Client}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(short))
	r := bufio.NewReader(conn)
	fmt.Fprint(conn, "KEEP_ALIVE\n")
	if got, _ := r.ReadString('\n'); got != "KEEP_ALIVE_ACK\n" {
		t.Fatalf("keep-alive over TLS answered %q", got)
	}

	stranger, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pki.CA, Certificates: []tls.Certificate{pki.Stranger}})
	var strangerGot string
	if err == nil {
		defer stranger.Close()
		stranger.SetDeadline(time.Now().Add(short))
		strangerGot, _ = bufio.NewReader(stranger).ReadString('\n')
	}

	d.Feed("over both", "listeners")
	for _, want := range []string{"over both", "listeners"} {
		if got := plain.ReadLine(short); got != want {
			t.Errorf("plain client got %q, want %q", got, want)
		}
		if got, _ := r.ReadString('\n'); got != want+"\n" {
			t.Errorf("TLS client got %q, want %q", got, want)
		}
	}
	if strangerGot != "" {
		t.Errorf("a client with a certificate from another CA read %q", strangerGot)
	}
	d.WaitLog(t, "TLS handshake failed", short)

	out, err := exec.Command(harness.BuildBinaries(t).Chattyctl, "--socket", d.ControlSocket(), "status", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Listeners) != 2 || st.Listeners[1].Addr != tlsAddr || st.Listeners[1].Protocol != "tls" {
		t.Errorf("listeners in status: %+v", st.Listeners)
	}
}

// A TLS listener with a missing key file stops chattyd at start with an
// error that names the file.
func TestTLSMissingKeyFile(t *testing.T) {
	t.Parallel()
	pki := harness.NewPKI(t)
	missing := pki.KeyFile + ".missing"
	cfg := writeFile(t, "chattyd.yaml", fmt.Sprintf("version: 1\npool:\n  size: 0\nbroadcast:\n  tls:\n    listen: %s\n    cert_file: %s\n    key_file: %s\n", harness.FreeAddr(t), pki.CertFile, missing))
	r := harness.Run(t, short, "--config", cfg, "--listen", "127.0.0.1:0", "--control-socket", harness.SocketDir(t)+"/c.sock")
	if r.Code != 1 || !strings.Contains(r.Stderr, missing) {
		t.Errorf("exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
}
