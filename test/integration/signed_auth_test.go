package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/test/harness"
)

// runCtl runs chattyctl to completion, within long, and returns its exit
// code and output.
func runCtl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(harness.BuildBinaries(t).Chattyctl, args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(long):
		cmd.Process.Kill()
		<-done
		t.Fatalf("chattyctl %v did not end within %s", args, long)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// waitLine reads lines until want, within short.
func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	deadline := time.After(short)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the watch ended before printing %q", want)
			}
			if l == want {
				return
			}
		case <-deadline:
			t.Fatalf("no line %q within %s", want, short)
		}
	}
}

// waitClosed reads lines until the watch ends, within short.
func waitClosed(t *testing.T, lines <-chan string) {
	t.Helper()
	deadline := time.After(short)
	for {
		select {
		case _, ok := <-lines:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("the watch still runs after %s", short)
		}
	}
}

// The signed listener over TLS with the identity's certificate, requiring
// authentication: pool workers authenticate with keys issued to them and
// verify and ack every line; chattyctl watch works with the pinned
// identity and an authorized key, and is refused with a wrong pin or a
// stranger's key, each refusal counted; a reload that authorizes the
// stranger lets it in, and one that removes the first key disconnects its
// watcher. The text TLS listener with the identity's
// certificate works pinned too.
func TestSignedTLSPinnedAndAuthenticated(t *testing.T) {
	t.Parallel()
	const workers, k = 2, 100
	keyFile, id := keygenKey(t)
	pubFile := identity.PublicPath(keyFile)
	clientKey, client := keygenKey(t)
	strangerKey, stranger := keygenKey(t)
	authorized := writeFile(t, "clients", identity.AuthorizedKeyLine(client.Public, "ops")+"\n")
	addr, tlsAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	d := harness.StartDaemon(t, harness.Options{Config: fmt.Sprintf(`version: 1
identity:
  key_file: %s
  authorized_keys: %s
broadcast:
  tls:
    listen: %s
    self_signed: true
  signed:
    listen: %s
    auth: authorized_keys
    tls:
      enabled: true
      self_signed: true
pool:
  size: %d
  worker:
    lifetime_min: 1h
    lifetime_max: 1h
    protocol: signed
`, keyFile, authorized, tlsAddr, addr, workers)})
	sock := d.ControlSocket()

	// Workers: authenticated with issued keys, over TLS pinned to the identity.
	waitConnected(t, d, 0, 1, workers)
	st := statusUntil(t, d, "workers authenticated", func(st control.Status) bool { return st.Clients.Connected == workers })
	var wantListener bool
	for _, l := range st.Listeners {
		wantListener = wantListener || (l.Addr == addr && l.Protocol == "signed+tls")
	}
	if !wantListener {
		t.Errorf("status lists %+v; want %s as signed+tls", st.Listeners, addr)
	}
	for _, pid := range d.Workers(t) {
		args, _ := procArgs(pid)
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if !strings.Contains(args, "--tls --pin "+pubFile) || strings.Contains(args, keyFile+" ") ||
			strings.Contains(string(env), "PRIVATE KEY") {
			t.Errorf("worker %d runs %q; want --tls --pin with the .pub file, and no private key in its arguments or environment", pid, args)
		}
	}
	var clients []control.Client
	ctlJSON(t, sock, &clients, "clients", "--json")
	keys := map[string]bool{}
	for _, c := range clients {
		keys[c.Key] = true
	}
	if len(clients) != workers || len(keys) != workers || keys[""] || keys[id.Fingerprint()] {
		t.Errorf("clients %+v; want %d workers, each with a key of its own (not the daemon's)", clients, workers)
	}
	d.Feed(numbered("auth", 1, k, 60)...)
	statusUntil(t, d, "every worker's acks", func(st control.Status) bool { return st.Clients.AcksGood == workers*k })

	// An authorized watcher, pinned: it gets the lines fed after it joined.
	watchArgs := []string{"--socket", sock, "watch", "--signed", "--pubkey", pubFile, "--tls", "--pin", pubFile}
	lines := startWatch(t, append(watchArgs, "--identity", clientKey)...)
	statusUntil(t, d, "the watcher authenticated", func(st control.Status) bool { return st.Clients.Connected == workers+1 })
	d.Feed("for the watcher")
	waitLine(t, lines, "for the watcher")

	// A wrong pin: refused by the client before anything is read.
	code, _, errOut := runCtl(t, append(watchArgs[:len(watchArgs)-1], identity.PublicPath(strangerKey), "--identity", clientKey)...)
	if code != 1 || !strings.Contains(errOut, "does not hold the pinned identity key") {
		t.Errorf("watch with a wrong pin = %d: %s", code, errOut)
	}
	statusUntil(t, d, "the failed TLS handshake counted", func(st control.Status) bool { return st.Clients.TLSFailed >= 1 })

	// A stranger's key: the listener sends it nothing and counts it.
	code, out, errOut := runCtl(t, append(watchArgs, "--identity", strangerKey)...)
	if code != 1 || out != "" || !strings.Contains(errOut, "refused our authentication") {
		t.Errorf("watch with a stranger's key = %d, printed %q: %s", code, out, errOut)
	}
	// Without a key at all, watch says what is missing.
	code, _, errOut = runCtl(t, watchArgs...)
	if code != 1 || !strings.Contains(errOut, "requires authentication; give --identity") {
		t.Errorf("watch without a key = %d: %s", code, errOut)
	}
	st = statusUntil(t, d, "two failed authentications", func(st control.Status) bool { return st.Clients.AuthFailed == 2 })
	if !strings.Contains(d.Log(), "Client authentication failed") || !strings.Contains(d.Log(), "reason=unauthorized") {
		t.Error("chattyd's log does not say why the stranger was refused")
	}

	// A reload that authorizes the stranger lets it in.
	if err := os.WriteFile(authorized, []byte(identity.AuthorizedKeyLine(client.Public, "ops")+"\n"+
		identity.AuthorizedKeyLine(stranger.Public, "new")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	since := d.LogLen()
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, since, "Reload: 2 client keys authorized", short)
	lines2 := startWatch(t, append(watchArgs, "--identity", strangerKey)...)
	statusUntil(t, d, "the new key authenticated", func(st control.Status) bool { return st.Clients.Connected == workers+2 })
	d.Feed("after the reload")
	waitLine(t, lines2, "after the reload")

	// A reload that removes the first watcher's key disconnects it.
	if err := os.WriteFile(authorized, []byte(identity.AuthorizedKeyLine(stranger.Public, "new")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	since = d.LogLen()
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, since, "1 clients whose key is no longer authorized were disconnected", short)
	waitClosed(t, lines)

	// The text protocol's TLS listener with the identity's certificate.
	text := startWatch(t, "--socket", sock, "watch", "--tls", "--pin", pubFile)
	statusUntil(t, d, "the TLS watcher", func(st control.Status) bool { return st.Clients.Connected == workers+2 })
	d.Feed("over TLS")
	waitLine(t, text, "over TLS")
	code, _, errOut = runCtl(t, "--socket", sock, "watch", "--tls", "--pin", identity.PublicPath(strangerKey))
	if code != 1 || !strings.Contains(errOut, "does not hold the pinned identity key") {
		t.Errorf("text TLS watch with a wrong pin = %d: %s", code, errOut)
	}
	if st := status(t, d); st.Clients.AcksMismatched != 0 || st.Pool.Restarts != 0 {
		t.Errorf("acks mismatched %d, worker restarts %d; want 0 and 0", st.Clients.AcksMismatched, st.Pool.Restarts)
	}
}

// Where the signed listener's certificate comes from is set at start: a
// reload that turns self_signed off (for certificate files) says it needs
// a restart and keeps serving the identity's certificate, so clients
// pinned to the identity (built-in workers among them) keep connecting.
func TestSignedTLSSourceKeptOnReload(t *testing.T) {
	t.Parallel()
	keyFile, _ := keygenKey(t)
	pubFile := identity.PublicPath(keyFile)
	pki := harness.NewPKI(t)
	addr := harness.FreeAddr(t)
	conf := func(tlsBody string) string {
		return fmt.Sprintf("version: 1\npool:\n  size: 0\nidentity:\n  key_file: %s\nbroadcast:\n  signed:\n    listen: %s\n    tls:\n      enabled: true\n%s", keyFile, addr, tlsBody)
	}
	d := harness.StartDaemon(t, harness.Options{Config: conf("      self_signed: true\n")})
	d.WaitLog(t, "The signed listener is on "+addr, short)
	d.WriteConfig(conf(fmt.Sprintf("      cert_file: %s\n      key_file: %s\n", pki.CertFile, pki.KeyFile)))
	since := d.LogLen()
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, since, "Configuration reloaded", short)
	if !strings.Contains(d.Log()[since:], "field=broadcast.signed") {
		t.Errorf("the reload does not say that broadcast.signed changes only at restart:\n%s", d.Log()[since:])
	}
	lines := startWatch(t, "--socket", d.ControlSocket(), "watch", "--signed", "--pubkey", pubFile, "--tls", "--pin", pubFile)
	statusUntil(t, d, "the pinned watcher", func(st control.Status) bool { return st.Clients.Connected == 1 })
	d.Feed("still pinned")
	waitLine(t, lines, "still pinned")
}

// broadcast.signed.max_unauthenticated reaches the signed listener and
// changes on reload: with a limit of one, a second stranger is closed at
// once, sent nothing, and status counts both; after a reload to two, the
// next stranger is sent its CHALLENGE.
func TestSignedMaxUnauthenticated(t *testing.T) {
	t.Parallel()
	keyFile, _ := keygenKey(t)
	_, client := keygenKey(t)
	authorized := writeFile(t, "clients", identity.AuthorizedKeyLine(client.Public, "ops")+"\n")
	addr := harness.FreeAddr(t)
	conf := func(limit int) string {
		return config(fmt.Sprintf("identity:\n  key_file: %s\n  authorized_keys: %s\nbroadcast:\n  signed:\n    listen: %s\n    auth: authorized_keys\n    max_unauthenticated: %d\n",
			keyFile, authorized, addr, limit))
	}
	d := harness.StartDaemon(t, harness.Options{Config: conf(1)})
	d.WaitLog(t, "The signed listener is on "+addr, short)

	// stranger connects and reports whether it was sent anything (its
	// CHALLENGE) before the connection closed.
	stranger := func() (sent bool) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetReadDeadline(time.Now().Add(short))
		var b [1]byte
		n, err := conn.Read(b[:])
		if n == 0 && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a stranger read nothing, but the connection is not closed: %v", err)
		}
		return n > 0
	}

	if !stranger() {
		t.Fatal("the first stranger was sent nothing; want its CHALLENGE")
	}
	if stranger() {
		t.Fatal("the second stranger was sent something; want the connection closed at once")
	}
	st := statusUntil(t, d, "one client authenticating, one refused for it", func(st control.Status) bool {
		return st.Clients.Authenticating == 1 && st.Clients.UnauthenticatedRefused == 1
	})
	if st.Clients.Accepted != 1 || st.Clients.Refused != 0 {
		t.Errorf("accepted %d, refused %d; want 1 and 0 (a refusal for max_unauthenticated is neither)", st.Clients.Accepted, st.Clients.Refused)
	}

	d.WriteConfig(conf(2))
	since := d.LogLen()
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, since, "Configuration reloaded", short)
	if strings.Contains(d.Log()[since:], "field=broadcast.signed") {
		t.Errorf("the reload says max_unauthenticated needs a restart:\n%s", d.Log()[since:])
	}
	if !stranger() {
		t.Fatal("after the reload to 2, the second stranger was sent nothing; want its CHALLENGE")
	}
	// Accepted, not authenticating: the first stranger's place ends with
	// its time to authenticate, which a slow machine may reach by now.
	statusUntil(t, d, "the second stranger accepted", func(st control.Status) bool {
		return st.Clients.Accepted == 2 && st.Clients.UnauthenticatedRefused == 1
	})
}

// A signed listener at max_clients refuses the next connection with the
// same ERROR line as the text listener; chattyctl watch --signed says that
// the server refused it, and why, rather than that the stream is foreign.
func TestSignedWatchRefusedOverMaxClients(t *testing.T) {
	t.Parallel()
	keyFile, _ := keygenKey(t)
	pubFile := identity.PublicPath(keyFile)
	d := harness.StartDaemon(t, harness.Options{Config: config(fmt.Sprintf(
		"identity:\n  key_file: %s\nbroadcast:\n  max_clients: 1\n  signed:\n    listen: 127.0.0.1:0\n", keyFile))})
	addr := d.Addrs().Signed
	d.WaitLog(t, "The signed listener is on "+addr, short)
	startWatch(t, "--socket", d.ControlSocket(), "watch", "--signed", "--pubkey", pubFile)
	statusUntil(t, d, "the first watcher", func(st control.Status) bool { return st.Clients.Connected == 1 })

	code, _, errOut := runCtl(t, "--socket", d.ControlSocket(), "watch", "--signed", "--pubkey", pubFile)
	if code == 0 || !strings.Contains(errOut, `the server refused the connection: "ERROR too many clients (max_clients 1); try again later"`) {
		t.Errorf("second watch = %d: %s", code, errOut)
	}
	statusUntil(t, d, "the refusal counted", func(st control.Status) bool { return st.Clients.Refused == 1 })
}
