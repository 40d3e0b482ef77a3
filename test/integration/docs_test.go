package integration

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
)

// docFiles are the files whose sh code blocks the docs test reads: the
// README's and the quick starts of the docs that show chattyd and
// chattyctl commands.
var docFiles = []string{"README.md", "docs/control.md", "docs/systemd.md", "docs/reliability.md", "docs/benchmarks.md"}

// docExemptions are the chattyd and chattyctl commands of the docs that the
// test does not run, each with the reason. A command here that the docs no
// longer show fails the test, so the list cannot outlive the docs.
var docExemptions = map[string]string{
	"some-producer | bin/chattyd":                                         "some-producer is a placeholder for the user's program",
	"bin/chattyd --config configs/chattyd.yaml":                           "starts a daemon on the fixed port 54321 and the user's control socket; every integration test starts chattyd, and this file is checked by check-config below",
	"bin/chattyd keygen --out /etc/chattyd/identity.key":                  "writes under /etc (root); TestKeygenMakesTheDirectory makes a missing directory the same way",
	"chattyd check-config /etc/chattyd/chattyd.yaml":                      "the installed package's file; make systemd-test installs the package",
	"bin/chattyctl watch --state watch.state":                             "would leave a state file in the clone; TestWatchStateGoesOnAfterTheLastLine runs it with a temporary one",
	"chattyctl watch --state /var/tmp/watch.state":                        "would leave a state file on the machine; TestWatchStateGoesOnAfterTheLastLine runs it with a temporary one",
	"chattyctl watch --signed --pubkey /var/lib/chattyd/identity.key.pub": "the packaged daemon's key; TestWatchSigned and the signed tests verify the signed listener with a key they make",
	"chattyctl top --interval 5s | tee top.log":                           "writes top.log in the current directory; chattyctl top itself runs above, and TestTopPlain covers its plain output",
	"sudo chattyctl identity":                                             "the packaged daemon's socket, for root; chattyctl identity runs above, and make systemd-test runs this walk-through",
	"source <(chattyctl completion bash)":                                 "runs in the user's shell; the completion command itself is run below",
	"source <(bin/chattyctl completion bash)":                             "runs in the user's shell; ctl's TestBashCompletionFlags runs the script in bash",
}

// docCommand is one command line of a doc's sh block.
type docCommand struct {
	file string
	line int
	text string // without its comment
}

// docCommands returns the chattyd and chattyctl commands of the files.
func docCommands(t *testing.T, root string) []docCommand {
	t.Helper()
	var out []docCommand
	for _, name := range docFiles {
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		in := false
		sc := bufio.NewScanner(bytes.NewReader(data))
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "```"):
				in = !in && strings.TrimSpace(strings.TrimPrefix(line, "```")) == "sh"
				continue
			case !in:
				continue
			}
			text := strings.TrimSpace(stripComment(line))
			if text == "" || !mentionsOurs(text) {
				continue
			}
			out = append(out, docCommand{file: name, line: n, text: text})
		}
	}
	return out
}

// stripComment removes a trailing # comment outside quotes.
func stripComment(s string) string {
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t'):
			return s[:i]
		}
	}
	return s
}

// mentionsOurs reports whether a command line runs chattyd or chattyctl:
// as the program of one of its pipeline's commands (after sudo, or inside
// <( )), not as an argument such as a unit name or a load tool's -bin.
func mentionsOurs(s string) bool {
	for _, seg := range strings.Split(s, "|") {
		words := strings.Fields(seg)
		for len(words) > 0 && (words[0] == "sudo" || words[0] == "source") {
			words = words[1:]
		}
		if len(words) == 0 {
			continue
		}
		w := strings.TrimPrefix(words[0], "<(")
		if base := filepath.Base(w); base == "chattyd" || base == "chattyctl" {
			return true
		}
	}
	return false
}

// splitWords splits a simple shell command line into words, honouring
// single and double quotes.
func splitWords(s string) []string {
	var words []string
	var cur strings.Builder
	quote, inWord := byte(0), false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// Every chattyd and chattyctl command that README.md and the docs show
// works as written, against a daemon this test starts: no non-zero exit,
// no usage error. The exemptions say why a command is not run.
func TestDocsCommandsWork(t *testing.T) {
	t.Parallel()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bins := harness.BuildBinaries(t)
	cmds := docCommands(t, root)
	if len(cmds) < 10 {
		t.Fatalf("found only %d chattyd and chattyctl commands in the docs; is the parser broken?", len(cmds))
	}
	seen := map[string]bool{}

	cfg := "version: 1\nbroadcast:\n  sequenced:\n    listen: 127.0.0.1:0\npool:\n  size: 2\n  command: [sleep, \"3600\"]\nidentity:\n  generate: true\n  key_file: " +
		filepath.Join(t.TempDir(), "identity.key") + "\n"
	var d *harness.Daemon
	daemon := func() *harness.Daemon {
		if d == nil || d.Exited() {
			d = harness.StartDaemon(t, harness.Options{Config: cfg})
		}
		return d
	}

	for _, c := range cmds {
		where := c.file + ":" + strconv.Itoa(c.line)
		if reason, ok := docExemptions[c.text]; ok {
			seen[c.text] = true
			t.Logf("%s: not run: %s: %s", where, c.text, reason)
			continue
		}
		words := splitWords(c.text)
		if strings.Contains(c.text, "|") || strings.ContainsAny(c.text, "<>$;&") {
			t.Errorf("%s: %q is not a simple command this test can run; make it one or add it to docExemptions with the reason", where, c.text)
			continue
		}
		bin := ""
		switch filepath.Base(words[0]) {
		case "chattyd":
			bin = bins.Chattyd
		case "chattyctl":
			bin = bins.Chattyctl
		default:
			t.Errorf("%s: %q runs chattyd or chattyctl behind another program; add it to docExemptions with the reason", where, c.text)
			continue
		}
		args := words[1:]
		env := os.Environ()
		if bin == bins.Chattyctl {
			env = append(env, "CHATTY_SOCKET="+daemon().ControlSocket())
		}
		t.Run(where, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), long)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = root
			cmd.Env = env
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if len(args) > 0 && (args[0] == "watch" || args[0] == "top") {
				// watch and top run until stopped: watch works when it
				// prints a line fed after it connected, top when it
				// prints a line of counters.
				want := "docs-test-line"
				if args[0] == "top" {
					want = "lines="
				}
				runStreaming(t, cmd, d, want)
				return
			}
			err := cmd.Run()
			if err != nil || strings.Contains(stderr.String(), "flag provided but not defined") {
				t.Errorf("%s: %s: %v\nstdout: %s\nstderr: %s", where, c.text, err, stdout.String(), stderr.String())
			}
			if len(args) > 0 && args[0] == "stop" {
				if code := d.Wait(long); code != 0 {
					t.Errorf("chattyd exited %d after %s", code, c.text)
				}
			}
		})
	}
	for text := range docExemptions {
		if !seen[text] {
			t.Errorf("docExemptions lists %q, which no doc shows any more", text)
		}
	}
}

// runStreaming starts a command that runs until stopped, feeds a line
// until the command prints a line holding want, and stops it.
func runStreaming(t *testing.T, cmd *exec.Cmd, d *harness.Daemon, want string) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		pr.Close()
	}()
	got := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	deadline := time.After(long)
	tick := time.NewTicker(50 * time.Millisecond) // feeds until watch is connected
	defer tick.Stop()
	for {
		select {
		case line, ok := <-got:
			if !ok {
				t.Fatalf("%s ended before printing %q", cmd.Args[1], want)
			}
			if strings.Contains(line, want) {
				return
			}
		case <-tick.C:
			d.Feed("docs-test-line")
		case <-deadline:
			t.Fatalf("%s printed no line holding %q", cmd.Args[1], want)
		}
	}
}
