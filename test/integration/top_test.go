package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/test/harness"
)

// tmuxServer is a tmux server of the test's own, on a private socket, so
// that the test never touches the user's tmux; it is killed when the test
// ends.
type tmuxServer struct {
	t    *testing.T
	bin  string
	sock string
}

// startTmux returns a private tmux server, or skips the test where tmux
// is missing (fails under CI, which installs it: see .ci/run).
func startTmux(t *testing.T) *tmuxServer {
	t.Helper()
	bin, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tmux is not installed, and CI=true (.ci/run installs it)")
		}
		t.Skip("tmux is not installed (.ci/run installs it)")
	}
	s := &tmuxServer{t: t, bin: bin, sock: filepath.Join(harness.SocketDir(t), "tmux")}
	t.Cleanup(func() { exec.Command(s.bin, "-S", s.sock, "kill-server").Run() })
	return s
}

// run runs a tmux command on the private server and returns its output.
func (s *tmuxServer) run(args ...string) string {
	s.t.Helper()
	cmd := exec.Command(s.bin, append([]string{"-S", s.sock, "-f", "/dev/null"}, args...)...)
	// The session's environment: a UTF-8 locale, no TMUX of an outer
	// session.
	cmd.Env = append(os.Environ(), "TMUX=", "LANG=C.UTF-8")
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// screen is what the pane shows.
func (s *tmuxServer) screen() string { return s.run("capture-pane", "-p", "-t", "top") }

// display expands a tmux format for the pane.
func (s *tmuxServer) display(format string) string {
	return strings.TrimSpace(s.run("display-message", "-p", "-t", "top", format))
}

// waitScreen polls the pane until ok accepts it and returns it.
func (s *tmuxServer) waitScreen(what string, ok func(string) bool) string {
	s.t.Helper()
	deadline := time.Now().Add(long)
	for {
		scr := s.screen()
		if ok(scr) {
			return scr
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("after %s the pane still does not show %s:\n%s", long, what, scr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// chattyctl top in a terminal of 120x40 shows the numbers status --json
// gives, follows clients coming and going, and quits on q (and on Ctrl-C)
// with exit status 0, leaving the terminal as it found it: main screen,
// cursor shown, its mode unchanged.
func TestTopTerminal(t *testing.T) {
	t.Parallel()
	tm := startTmux(t)
	d := harness.StartDaemon(t, harness.Options{Config: sleepers(2)})
	sock := d.ControlSocket()
	clients := admitted(t, d, 2)
	lines := numbered("top", 1, 25, 0)
	d.Feed(lines...)
	for _, c := range clients {
		c.ReadLines(len(lines), short)
	}
	st := waitStatus(t, sock, "25 lines, 2 clients and 2 workers", func(st wireStatus) bool {
		return st.Feed.Lines == 25 && st.Clients.Connected == 2 && st.Pool.Running == 2
	})

	for _, quit := range []string{"q", "C-c"} {
		t.Run(quit, func(t *testing.T) {
			dir := t.TempDir()
			before, after := filepath.Join(dir, "stty.before"), filepath.Join(dir, "stty.after")
			script := fmt.Sprintf("stty -g > %s; %s --socket %s top --interval 200ms; echo EXIT=$?; stty -g > %s; sleep 60",
				shellQuote(before), shellQuote(harness.BuildBinaries(t).Chattyctl), shellQuote(sock), shellQuote(after))
			tm.run("new-session", "-d", "-s", "top", "-x", "120", "-y", "40", script)
			defer tm.run("kill-session", "-t", "top")

			scr := tm.waitScreen("the feed's lines and the clients", func(s string) bool {
				return strings.Contains(s, fmt.Sprintf("lines %d ", st.Feed.Lines)) &&
					strings.Contains(s, fmt.Sprintf("clients  %d connected", st.Clients.Connected))
			})
			for _, want := range []string{
				fmt.Sprintf("pool     %d of %d running", st.Pool.Running, st.Pool.Desired),
				fmt.Sprintf("listen   broadcast tcp %s  clients %d ", st.Listeners[0].Addr, st.Clients.Connected),
				"CLIENT", "SLOT", "last 1m  ",
			} {
				if !strings.Contains(scr, want) {
					t.Errorf("the pane lacks %q:\n%s", want, scr)
				}
			}
			var cl []wireClient
			ctlJSON(t, sock, &cl, "clients")
			for _, c := range cl {
				if !regexp.MustCompile(`(?m)^` + fmt.Sprint(c.ID) + ` +` + regexp.QuoteMeta(c.Remote) + ` +broadcast `).MatchString(scr) {
					t.Errorf("the pane lacks client %d from %s:\n%s", c.ID, c.Remote, scr)
				}
			}
			for _, w := range st.Pool.Slots {
				if !regexp.MustCompile(fmt.Sprintf(`(?m)^%d +%d +running `, w.Slot, w.PID)).MatchString(scr) {
					t.Errorf("the pane lacks slot %d with pid %d:\n%s", w.Slot, w.PID, scr)
				}
			}
			for _, l := range strings.Split(scr, "\n") {
				if len([]rune(l)) >= 120 {
					t.Errorf("a line fills the width of 120: %q", l)
				}
			}
			if got := tm.display("#{alternate_on} #{cursor_flag}"); got != "1 0" {
				t.Errorf("while top runs, alternate screen and cursor shown are %q, want \"1 0\"", got)
			}

			// A client that comes is an event, and counted.
			extra := harness.Dial(t, d.Addr())
			extra.KeepAlive(short)
			tm.waitScreen("the new client", func(s string) bool {
				return strings.Contains(s, "clients  3 connected") && strings.Contains(s, "  clients 3 ") &&
					strings.Contains(s, "connected from 127.0.0.1:")
			})
			extra.Close()
			tm.waitScreen("the client gone", func(s string) bool {
				return strings.Contains(s, "clients  2 connected") && strings.Contains(s, " disconnected")
			})

			tm.run("send-keys", "-t", "top", quit)
			scr = tm.waitScreen("top's exit", func(s string) bool { return strings.Contains(s, "EXIT=") })
			if !strings.Contains(scr, "EXIT=0") {
				t.Errorf("top did not exit 0:\n%s", scr)
			}
			if strings.Contains(scr, "CLIENT") {
				t.Errorf("top's frame stayed on the screen after it quit:\n%s", scr)
			}
			if got := tm.display("#{alternate_on} #{cursor_flag}"); got != "0 1" {
				t.Errorf("after top, alternate screen and cursor shown are %q, want \"0 1\"", got)
			}
			poll.Eventually(t, short, func() bool {
				fi, err := os.Stat(after)
				return err == nil && fi.Size() > 0
			}, "the shell to record the terminal's mode after top")
			b, _ := os.ReadFile(before)
			a, _ := os.ReadFile(after)
			if len(b) == 0 || string(a) != string(b) {
				t.Errorf("the terminal's mode changed: before %q, after %q", b, a)
			}
		})
	}
}
