package integration

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/chatty-dev/chatty/test/harness"
)

// startSignedDaemon starts chattyd with a keygen'd identity and a signed
// listener in mode, with more settings of broadcast.signed in extra (YAML
// lines indented by four spaces), and returns it with the listener's
// address and the public key chattyctl identity reports and the .pub file
// beside the key.
func startSignedDaemon(t *testing.T, mode, extra string) (d *harness.Daemon, addr string, pub ed25519.PublicKey, pubFile string) {
	t.Helper()
	keyFile, id := keygenKey(t)
	// Port 0 and the bound address from the status: a port found free
	// and then bound by chattyd can be taken by a parallel test between.
	d = harness.StartDaemon(t, harness.Options{Config: config(fmt.Sprintf(
		"identity:\n  key_file: %s\nbroadcast:\n  signed:\n    listen: 127.0.0.1:0\n    mode: %s\n%s", keyFile, mode, extra))})
	addr = d.Addrs().Signed
	d.WaitLog(t, "The signed listener is on "+addr, short)

	out, err := exec.Command(harness.BuildBinaries(t).Chattyctl, "--socket", d.ControlSocket(), "identity", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var shown control.Identity
	if err := json.Unmarshal(out, &shown); err != nil {
		t.Fatal(err)
	}
	pub, err = identity.ParsePublicKey([]byte(shown.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(id.Public) {
		t.Fatalf("chattyctl identity shows %s; the .pub file holds %s", shown.Fingerprint, id.Fingerprint())
	}
	return d, addr, pub, identity.PublicPath(keyFile)
}

// readVerified reads conn with a Verifier of pub until n messages have
// verified or the verifier rejects the stream, acking each message.
func readVerified(t *testing.T, conn net.Conn, pub ed25519.PublicKey, n int) ([]string, error) {
	t.Helper()
	v, err := signed.NewVerifier(pub, signed.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	buf := make([]byte, 32<<10)
	conn.SetDeadline(time.Now().Add(long))
	for len(got) < n {
		k, rerr := conn.Read(buf)
		var acks []byte
		if err := v.Feed(buf[:k], func(m *signed.Message) {
			got = append(got, string(m.Payload))
			acks = signed.AppendAck(acks, m.Seq)
		}); err != nil {
			return got, err
		}
		if _, err := conn.Write(acks); err != nil {
			t.Fatal(err)
		}
		if rerr != nil {
			t.Fatalf("read after %d messages: %v", len(got), rerr)
		}
	}
	return got, nil
}

// A Go client on chattyd's signed listener verifies every fed line with
// the public key chattyctl identity shows, in both modes; its acks are
// counted in status, and status lists the listener as signed.
func TestSignedListenerEndToEnd(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"chained", "per-message"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			d, addr, pub, _ := startSignedDaemon(t, mode, "")
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			statusUntil(t, d, "one client connected", func(st control.Status) bool { return st.Clients.Connected == 1 })

			lines := numbered("signed", 1, 500, 100)
			d.Feed(lines...)
			got, err := readVerified(t, conn, pub, len(lines))
			if err != nil {
				t.Fatalf("verifier rejected chattyd's stream after %d messages: %v", len(got), err)
			}
			for i := range lines {
				if got[i] != lines[i] {
					t.Fatalf("message %d = %q, want %q", i, got[i], lines[i])
				}
			}
			st := statusUntil(t, d, "every ack counted", func(st control.Status) bool { return st.Clients.AcksGood == uint64(len(lines)) })
			if st.Clients.AcksMismatched != 0 {
				t.Errorf("acks mismatched: %d", st.Clients.AcksMismatched)
			}
			var found bool
			for _, l := range st.Listeners {
				found = found || (l.Addr == addr && l.Protocol == "signed")
			}
			if !found {
				t.Errorf("status listeners %+v lack %s as signed", st.Listeners, addr)
			}
		})
	}
}

// A proxy that flips one byte of chattyd's signed stream is caught by the
// client's verifier, which delivers no altered line.
func TestSignedTamperingDetected(t *testing.T) {
	t.Parallel()
	d, addr, pub, _ := startSignedDaemon(t, "chained", "")
	proxy := harness.StartSignedProxy(t, addr, harness.ProxyOptions{Tamper: harness.Flip, Nth: 5})
	conn, err := net.Dial("tcp", proxy.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	statusUntil(t, d, "one client connected", func(st control.Status) bool { return st.Clients.Connected == 1 })

	lines := numbered("tamper", 1, 200, 200)
	d.Feed(lines...)
	got, err := readVerified(t, conn, pub, len(lines))
	if err == nil {
		t.Fatal("the verifier accepted a stream with a flipped byte")
	}
	var re *signed.RejectError
	if !errors.As(err, &re) || re.Reason != signed.ReasonBadChain || re.Seq != 5 {
		t.Fatalf("error %v; want a *signed.RejectError for bad_chain at seq 5", err)
	}
	for i, g := range got {
		if g != lines[i] {
			t.Fatalf("delivered an altered line %d: %q", i, g)
		}
	}
	t.Logf("rejected after %d good messages: %v", len(got), err)
}

// statusUntil polls chattyd's status until ok accepts it.
func statusUntil(t *testing.T, d *harness.Daemon, what string, ok func(control.Status) bool) control.Status {
	t.Helper()
	return pollUntil(t, "the status", what, client.New(d.ControlSocket()).Status, ok)
}

// clientsUntil polls chattyd's list of clients until ok accepts it.
func clientsUntil(t *testing.T, d *harness.Daemon, what string, ok func([]control.Client) bool) []control.Client {
	t.Helper()
	return pollUntil(t, "the list of clients", what, client.New(d.ControlSocket()).Clients, ok)
}

// pollUntil calls get every 20 ms until ok accepts its answer, and fails
// the test if it has not within short; name and what describe the answer
// and what was expected of it.
func pollUntil[T any](t *testing.T, name, what string, get func(context.Context) (T, error), ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(short)
	for {
		v, err := get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s %s still does not show %s: %+v", short, name, what, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pool workers pointed at the signed listener (pool.worker.protocol:
// signed) are given the .pub file, verify every message and acknowledge
// it: acks_good grows to workers × lines, none mismatched, and PINGs keep
// them alive: after the messages, each worker's connection has several
// PINGs answered and no worker restarts.
func TestSignedPoolWorkers(t *testing.T) {
	t.Parallel()
	const n, k = 3, 200
	keyFile, _ := keygenKey(t)
	addr := harness.FreeAddr(t)
	d := harness.StartDaemon(t, harness.Options{Config: fmt.Sprintf(`version: 1
identity:
  key_file: %s
broadcast:
  signed:
    listen: %s
pool:
  size: %d
  worker:
    lifetime_min: 1h
    lifetime_max: 1h
    keepalive_min: 50ms
    keepalive_max: 100ms
    protocol: signed
`, keyFile, addr, n)})
	waitConnected(t, d, 0, 1, n)
	for _, pid := range d.Workers(t) {
		if args, err := procArgs(pid); err != nil || !strings.Contains(args, "--pubkey "+identity.PublicPath(keyFile)) ||
			strings.Contains(args, keyFile+" ") || strings.HasSuffix(args, keyFile) {
			t.Errorf("worker %d runs %q (%v); want --pubkey with the .pub file only", pid, args, err)
		}
	}

	d.Feed(numbered("pool", 1, k, 80)...)
	st := statusUntil(t, d, "every worker's acks", func(st control.Status) bool { return st.Clients.AcksGood == n*k })
	if st.Clients.AcksMismatched != 0 || st.Clients.Connected != n {
		t.Errorf("clients in status: %+v", st.Clients)
	}

	// Several keep-alive rounds after the messages, on the connections
	// that received them: a PONG that failed the worker's verification
	// would end the worker, its connection with it, before the next PING.
	const rounds = 3
	before := map[uint64]uint64{} // keep-alives answered by connection ID
	for _, c := range clientsUntil(t, d, "the workers' connections only", func(cs []control.Client) bool { return len(cs) == n }) {
		before[c.ID] = c.KeepAlives
	}
	clientsUntil(t, d, fmt.Sprintf("%d more keep-alives answered on each of connections %v", rounds, slices.Sorted(maps.Keys(before))),
		func(cs []control.Client) bool {
			answered := 0
			for _, c := range cs {
				if k, ok := before[c.ID]; ok && c.KeepAlives >= k+rounds {
					answered++
				}
			}
			return answered == n
		})
	if st := statusUntil(t, d, "workers", func(control.Status) bool { return true }); st.Pool.Restarts != 0 {
		t.Errorf("workers restarted %d times; last exits: %+v", st.Pool.Restarts, st.Pool.Slots)
	}
}

// procArgs returns a process's command line, its arguments joined by spaces.
func procArgs(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " "), err
}

// chattyctl watch --signed finds the signed listener in status, prints
// every fed line once it has verified with the .pub file, and ends when
// chattyd stops, with exit status 1 and saying the connection closed, the
// stream verified to its end.
func TestWatchSigned(t *testing.T) {
	t.Parallel()
	d, _, _, pubFile := startSignedDaemon(t, "chained", "")
	cmd := exec.Command(harness.BuildBinaries(t).Chattyctl, "--socket", d.ControlSocket(), "watch", "--signed", "--pubkey", pubFile)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	statusUntil(t, d, "watch connected", func(st control.Status) bool { return st.Clients.Connected == 1 })

	lines := numbered("watch", 1, 50, 60)
	d.Feed(lines...)
	got := make([]byte, 0, 4096)
	buf := make([]byte, 4096)
	want := strings.Join(lines, "\n") + "\n"
	for len(got) < len(want) {
		n, err := out.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if string(got) != want {
		t.Fatalf("watch --signed printed %q, want %q; stderr %s", got, want, stderr.String())
	}
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(long); code != 0 {
		t.Fatalf("chattyd exit %d", code)
	}
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 1 || !strings.Contains(stderr.String(), "closed the connection") {
		t.Errorf("watch --signed: %v; stderr %s; want exit status 1, closed the connection", err, stderr.String())
	}
}

// A client whose key is in identity.authorized_keys sends a signed
// Request on the signed listener and gets chattyd's signed Response,
// which its verifier matches to the request.
func TestSignedRequestResponse(t *testing.T) {
	t.Parallel()
	keyFile, _ := keygenKey(t)
	clientPub, clientPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	authorized := writeFile(t, "clients", identity.AuthorizedKeyLine(clientPub, "test client")+"\n")
	d := harness.StartDaemon(t, harness.Options{Config: config(fmt.Sprintf(
		"identity:\n  key_file: %s\n  authorized_keys: %s\nbroadcast:\n  signed:\n    listen: 127.0.0.1:0\n", keyFile, authorized))})
	addr := d.Addrs().Signed
	d.WaitLog(t, "1 client keys authorized", short)
	pub, err := identity.LoadPublicKey(identity.PublicPath(keyFile))
	if err != nil {
		t.Fatal(err)
	}

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(short))
	v, err := signed.NewVerifier(pub, signed.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	var resp *signed.Message
	var sentDigest signed.Digest
	sent := false
	for resp == nil {
		n, rerr := conn.Read(buf)
		if err := v.Feed(buf[:n], func(m *signed.Message) {
			if m.Kind == signed.KindResponse {
				mc := *m
				mc.Payload = append([]byte(nil), m.Payload...)
				resp = &mc
			}
		}); err != nil {
			t.Fatal(err)
		}
		if a, ok := v.Anchor(); ok && !sent {
			cs, err := signed.NewClientSigner(clientPriv, a)
			if err != nil {
				t.Fatal(err)
			}
			var frame []byte
			frame, sentDigest, err = cs.Append(nil, message.Request, time.Now(), []byte("are you there"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write(frame); err != nil {
				t.Fatal(err)
			}
			sent = true
		}
		if rerr != nil {
			t.Fatalf("read: %v", rerr)
		}
	}
	if resp.Request != sentDigest || resp.Type != message.Response || string(resp.Payload) != "Acknowledge: are you there" {
		t.Errorf("response %+v; want one to request %x", resp, sentDigest)
	}
	d.WaitLog(t, "Signed client message: are you there", short)

	// The same request signed by a key not in the file is rejected: the
	// connection is closed and status counts the frame.
	_, strangerPriv, _ := ed25519.GenerateKey(nil)
	stranger, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	stranger.SetDeadline(time.Now().Add(short))
	sv, _ := signed.NewVerifier(pub, signed.VerifierOptions{})
	for {
		n, err := stranger.Read(buf)
		if ferr := sv.Feed(buf[:n], func(*signed.Message) {}); ferr != nil || err != nil {
			t.Fatalf("stranger's stream: %v %v", ferr, err)
		}
		if _, ok := sv.Anchor(); ok {
			break
		}
	}
	a, _ := sv.Anchor()
	cs, _ := signed.NewClientSigner(strangerPriv, a)
	frame, _, _ := cs.Append(nil, message.Request, time.Now(), []byte("let me in"))
	stranger.Write(frame)
	statusUntil(t, d, "the stranger's frame rejected", func(st control.Status) bool {
		return st.Clients.RejectedFrames == 1 && st.Clients.Connected == 1
	})
}
