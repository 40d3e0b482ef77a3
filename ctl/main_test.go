package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/controlserver"

	"github.com/chatty-dev/chatty/internal/controlserver/controltest"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

func fakeDaemon(t *testing.T) (*controltest.Backend, string) {
	t.Helper()
	b := controltest.NewBackend(4)
	b.StatusValue = control.Status{
		Version:       "9.9.9",
		StartedAt:     time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC),
		UptimeSeconds: 3723,
		Listeners:     []control.Listener{{Name: "broadcast", Addr: "127.0.0.1:54321", Protocol: "tcp"}},
		Feed:          control.FeedStatus{Source: "stdin", State: control.FeedReading, Lines: 42, Bytes: 2048, Dropped: 1},
		Clients:       control.ClientsSummary{Connected: 3, Accepted: 5, KeepAlives: 6, Authenticating: 1, UnauthenticatedRefused: 4, UnknownLines: 9},
		Pool: control.PoolStatus{Running: 1, Replay: "unacked",
			ReplayTotals: control.ReplayCounters{Identified: 3, Resumed: 2, Gaps: 1, GapLines: 40, Duplicates: 7},
			Slots: []control.Worker{
				{Slot: 1, PID: 4242, State: "running", UptimeSeconds: 61, Restarts: 2, LastExit: "exited with code 2",
					LastAcked: 1234, Replay: control.ReplayCounters{Resumed: 2, Gaps: 1, GapLines: 40, Duplicates: 7}},
			}},
	}
	b.ClientsValue = []control.Client{
		{ID: 7, Remote: "127.0.0.1:40000", LinesSent: 10, KeepAlives: 3, UnknownLines: 5},
		{ID: 8, Remote: "127.0.0.1:40001", KeepAlives: 2, Key: "SHA256:xyz"},
	}
	b.StatusValue.Queue = &control.QueueStatus{Waiting: 3, InFlight: 2, OldestWaitingSeconds: 1.5, FeedHeld: true,
		Queued: 100, Acked: 95, Redeliveries: 4, DeadLetters: 1, DeadLettered: 1,
		Workers: []control.QueueWorker{{ID: 7, Listener: control.ListenerSequenced, Remote: "127.0.0.1:40000", InFlight: 2, Delivered: 50, Acked: 48}}}
	b.DeadLettersValue = []control.DeadLetter{{Seq: 50, Line: "job \x1b POISON", Deliveries: 5, At: time.Date(2026, 11, 24, 11, 2, 3, 0, time.UTC)}}
	b.WorkersValue = b.StatusValue.Pool.Slots
	b.IdentityValue = &control.Identity{PublicKey: "ssh-ed25519 AAAAC3Nza chattyd", Fingerprint: "SHA256:abc"}
	srv := controltest.Serve(t, b, controlserver.Options{MaxWorkers: 20})
	return b, srv.Addr()
}

// runCtl runs chattyctl in-process and returns its exit code and output.
func runCtl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, append([]string{"chattyctl"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name      string
		args      []string // after --socket PATH
		wantCode  int
		wantOut   []string
		wantErr   string
		wantCalls []string
	}{
		{name: "status", args: []string{"status"}, wantCode: 0,
			wantOut: []string{"chattyd 9.9.9, up 1h2m3s", "127.0.0.1:54321", "stdin", "reading; 42 lines", "3 connected", "; 6 keep-alives answered", "; 1 authenticating", "; 4 refused with too many authenticating", "; 9 unknown client lines", "1 of 4 running",
				"SLOT", "4242", "exited with code 2",
				"replay unacked: 3 workers identified, 2 resumed, 1 gaps (40 lines), 7 duplicate lines",
				"LAST ACKED", "1234", "1 (40 lines)"},
			wantCalls: []string{"status"}},
		{name: "status of a work queue", args: []string{"status"}, wantCode: 0,
			wantOut: []string{"work queue", "3 waiting, 2 in flight", "oldest waiting 1.5s; full, the feed is held back", "4 redelivered", "1 dead letters",
				"worker 7", "on broadcast-sequenced: 2 in flight, 50 delivered, 48 acked"},
			wantCalls: []string{"status"}},
		{name: "deadletters", args: []string{"deadletters"}, wantCode: 0,
			wantOut: []string{"SEQ", "DELIVERIES", "50", "2026-11-24 11:02:03", `"job \x1b POISON"`}, wantCalls: []string{"deadletters"}},
		{name: "deadletters json", args: []string{"deadletters", "--json"}, wantCode: 0,
			wantOut: []string{`"seq": 50`, `"deliveries": 5`}, wantCalls: []string{"deadletters"}},
		{name: "retry", args: []string{"retry", "50"}, wantCode: 0, wantOut: []string{"line 50 queued again"}, wantCalls: []string{"retry 50"}},
		{name: "retry unknown", args: []string{"retry", "49"}, wantCode: 1, wantErr: "no dead letter 49", wantCalls: []string{"retry 49"}},
		{name: "retry zero", args: []string{"retry", "0"}, wantCode: 2, wantErr: `retry: want a sequence number from 1 up, got "0"`},
		{name: "retry not a number", args: []string{"retry", "fifty"}, wantCode: 2, wantErr: `retry: want a sequence number from 1 up, got "fifty"`},
		{name: "retry without seq", args: []string{"retry"}, wantCode: 2, wantErr: "retry: want one sequence number"},
		{name: "clients", args: []string{"clients"}, wantCode: 0,
			wantOut: []string{"REMOTE", "KEEP-ALIVES", "UNKNOWN", "KEY", "127.0.0.1:40000", "SHA256:xyz"}, wantCalls: []string{"clients"}},
		{name: "workers", args: []string{"workers", "--json"}, wantCode: 0,
			wantOut: []string{`"pid": 4242`}, wantCalls: []string{"workers"}},
		{name: "identity", args: []string{"identity"}, wantCode: 0,
			wantOut: []string{"public key:  ssh-ed25519 AAAAC3Nza chattyd\n", "fingerprint: SHA256:abc\n"}, wantCalls: []string{"identity"}},
		{name: "identity json", args: []string{"identity", "--json"}, wantCode: 0,
			wantOut: []string{`"fingerprint": "SHA256:abc"`, `"public_key": "ssh-ed25519 AAAAC3Nza chattyd"`}, wantCalls: []string{"identity"}},
		{name: "send", args: []string{"send", "warning", "disk", "almost", "full"}, wantCode: 0,
			wantOut: []string{"[Warning] disk almost full"}, wantCalls: []string{"send Warning disk almost full"}},
		{name: "send one quoted argument", args: []string{"send", "INFO", "two  spaces"}, wantCode: 0,
			wantCalls: []string{"send Info two  spaces"}},
		{name: "send newline", args: []string{"send", "info", "a\nb"}, wantCode: 2,
			wantErr: "send: invalid message: the text contains a line break at byte 1"},
		{name: "send ESC", args: []string{"send", "info", "x\x1b]0;title\x07"}, wantCode: 2,
			wantErr: "send: invalid message: the text contains the control character U+001B at byte 1"},
		{name: "send NUL", args: []string{"send", "info", "a", "\x00"}, wantCode: 2,
			wantErr: "control character U+0000 at byte 2"},
		{name: "send C1", args: []string{"send", "info", "\u009b2J"}, wantCode: 2,
			wantErr: "control character U+009B at byte 0"},
		{name: "send empty text", args: []string{"send", "info", ""}, wantCode: 2,
			wantErr: "the text is empty"},
		{name: "send tab", args: []string{"send", "info", "a\tb"}, wantCode: 0,
			wantOut: []string{"[Info] a\tb\n"}, wantCalls: []string{"send Info a\tb"}},
		{name: "send unknown type", args: []string{"send", "loud", "x"}, wantCode: 2,
			wantErr: "want one of Request, Response, Critical, Info, Warning, Debug, Error"},
		{name: "send without message", args: []string{"send", "info"}, wantCode: 2, wantErr: "want a type and a message"},
		{name: "scale", args: []string{"scale", "3"}, wantCode: 0, wantOut: []string{"workers: 4 -> 3"},
			wantCalls: []string{"scale 3"}},
		{name: "scale zero", args: []string{"scale", "0"}, wantCode: 0, wantCalls: []string{"scale 0"}},
		{name: "scale negative", args: []string{"scale", "--", "-1"}, wantCode: 2,
			wantErr: "scale: want a whole number from 0 to 10000"},
		{name: "scale negative without --", args: []string{"scale", "-1"}, wantCode: 2,
			wantErr: `scale: want a whole number from 0 to 10000, got "-1"`},
		{name: "scale not a number", args: []string{"scale", "many"}, wantCode: 2,
			wantErr: `scale: want a whole number from 0 to 10000, got "many"`},
		{name: "scale fraction", args: []string{"scale", "1.5"}, wantCode: 2, wantErr: "scale: want a whole number"},
		{name: "scale too big", args: []string{"scale", "10001"}, wantCode: 2, wantErr: "scale: want a whole number"},
		{name: "scale above the daemon's limit", args: []string{"scale", "21"}, wantCode: 1,
			wantErr: "want a whole number from 0 to 20, got 21", wantCalls: nil},
		{name: "scale without n", args: []string{"scale"}, wantCode: 2, wantErr: "scale: want a whole number"},
		{name: "stop no-wait", args: []string{"stop", "--no-wait"}, wantCode: 0,
			wantOut: []string{"chattyd is stopping"}, wantCalls: []string{"stop"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantErr: `unknown command "frobnicate"`},
		{name: "unknown flag", args: []string{"status", "--colour"}, wantCode: 2, wantErr: "flag provided but not defined"},
		{name: "bad flag value", args: []string{"stop", "--timeout", "soon"}, wantCode: 2, wantErr: "invalid value"},
		{name: "extra argument", args: []string{"status", "now"}, wantCode: 2, wantErr: `unexpected argument "now"`},
		{name: "no command", args: nil, wantCode: 2, wantErr: "no command given"},
		{name: "help", args: []string{"help"}, wantCode: 0, wantOut: []string{"COMMANDS:", "scale"}},
		{name: "help flag", args: []string{"-h"}, wantCode: 0, wantOut: []string{"COMMANDS:", "GLOBAL OPTIONS:"}},
		{name: "help on a command", args: []string{"help", "scale"}, wantCode: 0, wantOut: []string{"chattyctl scale [command options] N"}},
		{name: "help flag on a command", args: []string{"stop", "--help"}, wantCode: 0, wantOut: []string{"--no-wait"}},
		{name: "help on an unknown command", args: []string{"help", "nope"}, wantCode: 2, wantErr: `unknown command "nope"`},
		{name: "version", args: []string{"version"}, wantCode: 0,
			wantOut: []string{"chattyctl ", "chattyd 9.9.9 at "}, wantCalls: []string{"status"}},
		{name: "completion bash", args: []string{"completion", "bash"}, wantCode: 0,
			wantOut: []string{"complete -o bashdefault", "--generate-bash-completion"}},
		{name: "completion zsh", args: []string{"completion", "zsh"}, wantCode: 0, wantOut: []string{"#compdef chattyctl"}},
		{name: "completion fish", args: []string{"completion", "fish"}, wantCode: 2, wantErr: `unknown shell "fish"`},
		{name: "completion candidates", args: []string{"send", "--generate-bash-completion"}, wantCode: 0,
			wantOut: []string{"Warning\n"}},
		{name: "man page", args: []string{"man"}, wantCode: 0, wantOut: []string{".TH", "scale"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, sock := fakeDaemon(t)
			code, out, errOut := runCtl(t, append([]string{"--socket", sock}, tt.args...)...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d; want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, errOut)
			}
			if slices.Contains(tt.wantCalls, "stop") {
				// The server calls Stop after its answer has gone out, so
				// chattyctl --no-wait may return first.
				select {
				case <-b.Stopped():
				case <-time.After(10 * time.Second):
					t.Fatal("the daemon was never asked to stop")
				}
			}
			if got := b.Calls(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("daemon calls = %q; want %q", got, tt.wantCalls)
			}
		})
	}
}

// Without a work queue, deadletters and retry say how to get one.
func TestDeadLettersWithoutQueue(t *testing.T) {
	b := controltest.NewBackend(1)
	srv := controltest.Serve(t, b, controlserver.Options{})
	for _, args := range [][]string{{"deadletters"}, {"retry", "3"}} {
		code, _, errOut := runCtl(t, append([]string{"--socket", srv.Addr()}, args...)...)
		if code != 1 || !strings.Contains(errOut, "set broadcast.delivery: one for a work queue") || !strings.Contains(errOut, "409") {
			t.Errorf("chattyctl %s: exit %d, stderr %q; want 1 and the 409 naming broadcast.delivery", strings.Join(args, " "), code, errOut)
		}
	}
}

// send refuses a text chattyd would refuse before it makes any request:
// with no daemon at the socket, the answer is the text's fault, exit 2.
func TestSendChecksTextFirst(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, text := range []string{"\x1b[2J", "bell\a", "del\x7f", "two\nlines", strings.Repeat("x", message.MaxTextBytes+1)} {
		code, _, errOut := runCtl(t, "--socket", sock, "send", "info", text)
		if code != 2 || !strings.Contains(errOut, "send: invalid message: ") || strings.Contains(errOut, "cannot reach") {
			t.Errorf("send %q = %d: %s; want 2, refused before any request", text, code, errOut)
		}
		if strings.ContainsFunc(strings.TrimSuffix(errOut, "\n"), message.IsControl) {
			t.Errorf("send %q: stderr holds a control character: %q", text, errOut)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	b, sock := fakeDaemon(t)
	code, out, errOut := runCtl(t, "--socket", sock, "status", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	want := b.StatusValue
	want.Pool.Desired = 4
	if st.Version != want.Version || st.Feed != want.Feed || st.Pool.Desired != 4 || len(st.Pool.Slots) != 1 {
		t.Fatalf("status = %+v; want %+v", st, want)
	}
}

// A feed waiting for its FIFO says what it waits for, in the table and in
// the JSON.
func TestStatusFeedWaiting(t *testing.T) {
	b, sock := fakeDaemon(t)
	detail := "waiting for the FIFO path /run/chattyd/feed to exist again"
	b.StatusValue.Feed = control.FeedStatus{Source: "fifo /run/chattyd/feed", State: control.FeedWaiting, Detail: detail}
	code, out, errOut := runCtl(t, "--socket", sock, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if want := "fifo /run/chattyd/feed  waiting (" + detail + "); 0 lines"; !strings.Contains(out, want) {
		t.Errorf("status output lacks %q:\n%s", want, out)
	}
	code, out, errOut = runCtl(t, "--socket", sock, "status", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if want := `"detail": "` + detail + `"`; !strings.Contains(out, want) {
		t.Errorf("JSON lacks %s:\n%s", want, out)
	}
}

// With a shared feed, status prints the NATS connection, the publisher's
// window and the consumer's gaps; without one, no nats line.
func TestStatusNATS(t *testing.T) {
	b, sock := fakeDaemon(t)
	code, out, _ := runCtl(t, "--socket", sock, "status")
	if code != 0 || strings.Contains(out, "nats") {
		t.Fatalf("without a shared feed: exit %d, output mentions nats:\n%s", code, out)
	}
	b.StatusValue.NATS = &control.NATSStatus{
		State: "connected", Server: "nats://10.0.0.1:4222", Stream: "CHATTY", Reconnects: 2,
		Publish: control.NATSPublishStatus{Window: 64, Pending: 3, Buffered: 1200, Lines: 900, LastSeq: 1000, Retries: 4, HeldBack: 1},
		Consume: control.NATSConsumeStatus{StreamSeq: 77, LastSeq: 1000, Lines: 1000, Gaps: 1, GapLines: 5},
	}
	code, out, errOut := runCtl(t, "--socket", sock, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"connected to nats://10.0.0.1:4222", "stream CHATTY; 2 reconnects",
		"900 lines, last 1000", "3 of 64 acks pending, 1200 bytes buffered; 4 retries, 1 held back",
		"1000 lines, last 1000 (stream 77)", "1 gaps (5 lines missing)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	b.StatusValue.NATS.Server, b.StatusValue.NATS.Embedded = "in-process", true
	if code, out, _ = runCtl(t, "--socket", sock, "status"); code != 0 || !strings.Contains(out, "connected in-process (embedded server)") {
		t.Errorf("on the embedded server: exit %d, output lacks \"connected in-process (embedded server)\":\n%s", code, out)
	}
}

func TestStopWaits(t *testing.T) {
	b, sock := fakeDaemon(t)
	code, out, errOut := runCtl(t, "--socket", sock, "stop", "--timeout", "10s")
	if code != 0 || !strings.Contains(out, "chattyd stopped") {
		t.Fatalf("stop = %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	select {
	case <-b.Stopped():
	default:
		t.Fatal("the daemon was not asked to stop")
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket still there after stop returned: %v", err)
	}
}

func TestNoDaemon(t *testing.T) {
	sock := filepath.Join(controltest.SocketDir(t), "none.sock")
	for _, args := range [][]string{{"status"}, {"scale", "2"}, {"send", "info", "hi"}, {"stop"}} {
		code, _, errOut := runCtl(t, append([]string{"--socket", sock}, args...)...)
		if code != 1 || !strings.Contains(errOut, "cannot reach chattyd at "+sock+": no such file; is chattyd running?") {
			t.Errorf("%v without daemon = %d, %q; want 1 and the is-it-running message", args, code, errOut)
		}
	}
}

// --socket naming a regular file (a config file given by mistake, say)
// is said to be no socket, not a stale one.
func TestSocketIsNoSocket(t *testing.T) {
	file := filepath.Join(t.TempDir(), "chattyd.yaml")
	if err := os.WriteFile(file, []byte("version: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"status"}, {"stop"}} {
		code, _, errOut := runCtl(t, append([]string{"--socket", file}, args...)...)
		want := "chattyctl: cannot reach chattyd at " + file + ": it is a regular file, not a socket; check --socket, CHATTY_SOCKET or control.socket\n"
		if code != 1 || errOut != want {
			t.Errorf("%v on a regular file = %d, %q; want 1, %q", args, code, errOut, want)
		}
	}
}

func TestSocketFromEnvAndConfig(t *testing.T) {
	_, sock := fakeDaemon(t)
	t.Run("env", func(t *testing.T) {
		t.Setenv("CHATTY_SOCKET", sock)
		if code, _, errOut := runCtl(t, "status"); code != 0 {
			t.Fatalf("status with CHATTY_SOCKET = %d: %s", code, errOut)
		}
	})
	t.Run("config", func(t *testing.T) {
		t.Setenv("CHATTY_SOCKET", "")
		cfg := filepath.Join(t.TempDir(), "chattyd.yaml")
		if err := os.WriteFile(cfg, []byte("version: 1\ncontrol:\n  socket: "+sock+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runCtl(t, "--config", cfg, "-v", "status")
		if code != 0 || !strings.Contains(errOut, "control socket "+sock) {
			t.Fatalf("status with --config = %d: %s", code, errOut)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		t.Setenv("CHATTY_SOCKET", "")
		cfg := filepath.Join(t.TempDir(), "chattyd.yaml")
		if err := os.WriteFile(cfg, []byte("version: 1\ncontrol:\n  sockett: x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// The misspelt key is named in a warning, and chattyctl goes
		// to the default socket, not to "x": whether a daemon answers
		// there is not this test's business.
		_, _, errOut := runCtl(t, "--config", cfg, "-v", "status")
		if !strings.Contains(errOut, `unknown field "sockett"`) || !strings.Contains(errOut, "warning") {
			t.Errorf("no warning naming the misspelt key: %q", errOut)
		}
		if strings.Contains(errOut, "control socket x") || !strings.Contains(errOut, "control socket /") {
			t.Errorf("did not fall back to the default socket: %q", errOut)
		}
	})
	t.Run("config unreadable", func(t *testing.T) {
		t.Setenv("CHATTY_SOCKET", "")
		dir := t.TempDir()
		broken := filepath.Join(dir, "broken.yaml")
		if err := os.WriteFile(broken, []byte("control: [socket\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ file, want string }{
			{filepath.Join(dir, "missing.yaml"), "no such file"},
			{broken, "cannot read control.socket"},
		} {
			code, _, errOut := runCtl(t, "--config", tc.file, "status")
			if code != 1 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, tc.file) {
				t.Errorf("--config %s: exit %d, %q; want 1 naming the file and %q", tc.file, code, errOut, tc.want)
			}
		}
	})
	// After a reload chattyd rejected, the same file still finds the
	// daemon: chattyctl needs only control.socket, and warns.
	t.Run("config invalid elsewhere", func(t *testing.T) {
		t.Setenv("CHATTY_SOCKET", "")
		cfg := filepath.Join(t.TempDir(), "chattyd.yaml")
		body := "version: 1\nbroadcast:\n  max_clients: -1\n  lisen: x\ncontrol:\n  socket: " + sock + "\n"
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runCtl(t, "--config", cfg, "status")
		if code != 0 {
			t.Fatalf("status with a config invalid outside control = %d: %s", code, errOut)
		}
		if !strings.Contains(errOut, "warning") || !strings.Contains(errOut, cfg) {
			t.Errorf("no warning naming the file: %q", errOut)
		}
	})
}

// broadcaster serves lines to the first client, then closes.
func broadcaster(t *testing.T, lines string) string {
	t.Helper()
	addr, _ := serveOnce(t, func(c net.Conn) { c.Write([]byte(lines)) })
	return addr
}

// serveOnce listens on a loopback port and hands the first connection to
// serve, closing it when serve returns. It returns the address, and a
// channel closed once serve has returned (or the listener was closed with
// nobody accepted). The listener is closed, and serve awaited, when the
// test ends.
func serveOnce(t *testing.T, serve func(c net.Conn)) (addr string, served <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String(), done
}

func TestWatch(t *testing.T) {
	const lines = "2024-07-06 02:19:04 WPEEo9bG5nnnS/tkKyiJMDf3LJJ3fiPE\nKEEP_ALIVE_ACK\nlast\n"
	t.Run("addr flag", func(t *testing.T) {
		addr := broadcaster(t, lines)
		code, out, errOut := runCtl(t, "--socket", "/nonexistent.sock", "watch", "--addr", addr)
		if code != 1 || out != lines {
			t.Fatalf("watch = %d, %q; want 1, %q; stderr %s", code, out, lines, errOut)
		}
		if want := "chattyctl: " + addr + " closed the connection (chattyd stopped"; !strings.HasPrefix(errOut, want) {
			t.Errorf("stderr %q does not say the connection closed (%q)", errOut, want)
		}
	})
	t.Run("addr from status", func(t *testing.T) {
		b, sock := fakeDaemon(t)
		b.StatusValue.Listeners[0].Addr = broadcaster(t, lines)
		code, out, errOut := runCtl(t, "--socket", sock, "watch")
		if code != 1 || out != lines || !strings.Contains(errOut, "closed the connection") {
			t.Fatalf("watch = %d, %q; want 1, %q; stderr %s", code, out, lines, errOut)
		}
	})
	t.Run("refused", func(t *testing.T) {
		const refusal = "ERROR too many clients (max_clients 1); try again later"
		addr := broadcaster(t, refusal+"\n")
		code, _, errOut := runCtl(t, "watch", "--addr", addr)
		if want := "chattyctl: " + addr + ` refused the connection: "` + refusal + `"` + "\n"; code != 1 || errOut != want {
			t.Fatalf("watch refused = %d, %q; want 1, %q", code, errOut, want)
		}
	})
	t.Run("an ERROR feed line is no refusal", func(t *testing.T) {
		code, _, errOut := runCtl(t, "watch", "--addr", broadcaster(t, "ok\nERROR disk failed\n"))
		if code != 1 || !strings.Contains(errOut, "closed the connection") {
			t.Fatalf("watch = %d, %q; want 1, closed the connection", code, errOut)
		}
	})
	t.Run("stdout closed", func(t *testing.T) {
		// A broadcaster that writes until its client goes.
		addr, served := serveOnce(t, func(c net.Conn) {
			for i := 0; ; i++ {
				if _, err := fmt.Fprintf(c, "line %d\n", i); err != nil {
					return
				}
			}
		})
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var errOut bytes.Buffer
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"chattyctl", "watch", "--addr", addr}, w, &errOut)
			w.Close()
		}()
		// As head -2 does: read two lines, then close.
		br := bufio.NewReader(r)
		for range 2 {
			if _, err := br.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
		}
		r.Close()
		if code := <-done; code != 0 || errOut.Len() != 0 {
			t.Fatalf("watch into a closed pipe = %d; stderr %q; want 0 and nothing said", code, errOut.String())
		}
		if ctx.Err() != nil {
			t.Fatal("watch ended by the test's timeout, not by the closed pipe")
		}
		<-served
	})
	t.Run("interrupted", func(t *testing.T) {
		addr, served := serveOnce(t, func(c net.Conn) {
			c.Write([]byte("first\n"))
			io.Copy(io.Discard, c) // until chattyctl hangs up
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// The interrupt arrives once the first line has been printed.
		out := &cancelOnWrite{cancel: cancel}
		var errOut bytes.Buffer
		code := run(ctx, []string{"chattyctl", "watch", "--addr", addr}, out, &errOut)
		if code != 0 || out.String() != "first\n" {
			t.Fatalf("interrupted watch = %d, %q; stderr %s", code, out.String(), errOut.String())
		}
		<-served // chattyctl closed its connection
	})
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		code, _, errOut := runCtl(t, "watch", "--addr", addr)
		if code != 1 || !strings.Contains(errOut, "connect to the broadcaster") {
			t.Fatalf("watch of a closed port = %d: %s", code, errOut)
		}
	})
}

// cancelOnWrite is a buffer that cancels a context when written to. It
// has no ReadFrom, so that io.Copy calls Write.
type cancelOnWrite struct {
	mu     sync.Mutex // guards buf
	buf    bytes.Buffer
	cancel func()
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	defer w.cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *cancelOnWrite) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// signedStream returns an encoder's anchor and Info messages for lines,
// ending with a checkpoint that covers them, and the key that verifies
// them.
func signedStream(t *testing.T, lines ...string) ([]byte, ed25519.PublicKey) {
	t.Helper()
	msgs := make([]message.Message, len(lines))
	for i, l := range lines {
		msgs[i] = message.Message{Type: message.Info, Text: l, Time: time.Now()}
	}
	return signedMessages(t, msgs...)
}

// signedMessages is signedStream for typed messages.
func signedMessages(t *testing.T, msgs ...message.Message) ([]byte, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := signed.NewEncoder(priv, signed.Chained, signed.EncoderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := enc.Anchor(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if b, _, err = enc.Append(b, m.Type, m.Time, []byte(m.Text)); err != nil {
			t.Fatal(err)
		}
	}
	return enc.Checkpoint(b), pub
}

func writePub(t *testing.T, pub ed25519.PublicKey) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chattyd.pub")
	if err := os.WriteFile(path, []byte(identity.AuthorizedKeyLine(pub, "test")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// watch --signed prints the messages that verify, a typed one as its text
// line, until the server closes the connection (exit 1), and stops with an
// error at a tampered byte without printing what follows.
func TestWatchSigned(t *testing.T) {
	stream, pub := signedStream(t, "one", "payload number two", "three")
	pubFile := writePub(t, pub)
	t.Run("verified", func(t *testing.T) {
		b, sock := fakeDaemon(t)
		b.StatusValue.Listeners = append(b.StatusValue.Listeners,
			control.Listener{Name: "broadcast-signed", Addr: broadcaster(t, string(stream)), Protocol: "signed"})
		code, out, errOut := runCtl(t, "--socket", sock, "watch", "--signed", "--pubkey", pubFile)
		if code != 1 || out != "one\npayload number two\nthree\n" || !strings.Contains(errOut, "closed the connection") {
			t.Fatalf("watch --signed = %d, %q; stderr %s", code, out, errOut)
		}
	})
	t.Run("typed", func(t *testing.T) {
		sent := time.Now().Add(-time.Second)
		warn := message.Message{Type: message.Warning, Text: "disk almost full", Time: sent}
		typed, pub := signedMessages(t, message.Message{Type: message.Info, Text: "a feed line", Time: sent}, warn)
		code, out, errOut := runCtl(t, "watch", "--signed", "--pubkey", writePub(t, pub), "--addr", broadcaster(t, string(typed)))
		if want := "a feed line\n" + warn.String() + "\n"; code != 1 || out != want {
			t.Fatalf("watch --signed = %d, %q; want %q; stderr %s", code, out, want, errOut)
		}
	})
	t.Run("tampered", func(t *testing.T) {
		bad := bytes.Clone(stream)
		i := bytes.Index(bad, []byte("payload number two"))
		bad[i] = 'P'
		code, out, errOut := runCtl(t, "watch", "--signed", "--pubkey", pubFile, "--addr", broadcaster(t, string(bad)))
		if code != 1 || strings.Contains(out, "number two") || !strings.Contains(errOut, "failed verification") {
			t.Fatalf("watch --signed of a tampered stream = %d, %q; stderr %s", code, out, errOut)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		other, _, _ := ed25519.GenerateKey(nil)
		code, out, errOut := runCtl(t, "watch", "--signed", "--pubkey", writePub(t, other), "--addr", broadcaster(t, string(stream)))
		if code != 1 || out != "" {
			t.Fatalf("watch --signed with another key = %d, %q; stderr %s", code, out, errOut)
		}
	})
	t.Run("usage", func(t *testing.T) {
		if code, _, errOut := runCtl(t, "watch", "--signed"); code != 2 || !strings.Contains(errOut, "--pubkey") {
			t.Errorf("watch --signed without --pubkey = %d: %s", code, errOut)
		}
	})
}

// ackFilter leaves out as many lines reading exactly KEEP_ALIVE_ACK as
// keep-alives are owed, and nothing else, however the stream is split.
func TestAckFilter(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		owed           int64
	}{
		{"nothing owed", "a\nKEEP_ALIVE_ACK\nb\n", "a\nKEEP_ALIVE_ACK\nb\n", 0},
		{"the answer", "a\nKEEP_ALIVE_ACK\nb\n", "a\nb\n", 1},
		{"a feed line like the answer, and the answer", "a\nKEEP_ALIVE_ACK\nKEEP_ALIVE_ACK\nb\n", "a\nKEEP_ALIVE_ACK\nb\n", 1},
		{"lines that start like it", "KEEP_ALIVE_AC\nKEEP_ALIVE_ACKS\nxKEEP_ALIVE_ACK\nKEEP\n", "KEEP_ALIVE_AC\nKEEP_ALIVE_ACKS\nxKEEP_ALIVE_ACK\nKEEP\n", 1},
		{"empty lines", "\n\nKEEP_ALIVE_ACK\n\n", "\n\n\n", 1},
		{"two answers", "KEEP_ALIVE_ACK\nKEEP_ALIVE_ACK\nz", "z", 2},
		{"an unfinished line at the end", "a\nKEEP_ALIVE_A", "a\nKEEP_ALIVE_A", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for split := 0; split <= len(tc.in); split++ {
				var out bytes.Buffer
				f := &ackFilter{out: &out, atStart: true}
				f.owed.Store(tc.owed)
				f.Write([]byte(tc.in[:split]))
				f.Write([]byte(tc.in[split:]))
				f.flush()
				if out.String() != tc.want {
					t.Fatalf("split at %d: %q, want %q", split, out.String(), tc.want)
				}
			}
		})
	}
}

// watch sends KEEP_ALIVE and does not print the answer.
func TestWatchKeepsAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err.Error()
			return
		}
		defer c.Close()
		io.WriteString(c, "before\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "KEEP_ALIVE_ACK\nafter\n")
		served <- line
	}()
	code, out, errOut := runCtl(t, "watch", "--addr", ln.Addr().String(), "--keepalive", "50ms")
	if got := <-served; got != "KEEP_ALIVE\n" {
		t.Fatalf("the broadcaster read %q, want a keep-alive", got)
	}
	if code != 1 || out != "before\nafter\n" {
		t.Fatalf("watch = %d, %q; want 1, %q; stderr %s", code, out, "before\nafter\n", errOut)
	}
	if code, _, errOut := runCtl(t, "watch", "--addr", ln.Addr().String(), "--keepalive", "-1s"); code != 2 || !strings.Contains(errOut, "--keepalive must not be negative") {
		t.Errorf("watch --keepalive -1s = %d, %q; want 2 and the reason", code, errOut)
	}
}
