package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chatty-dev/chatty/internal/manpage/mantest"
)

// TestBashCompletionFlags runs the bash completion script in a real bash
// against the built chattyctl and checks that flags complete, for the
// program and for every command that has flags.
func TestBashCompletionFlags(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "chattyctl")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// complete runs the completion function for the words, the last one
	// being completed, and returns what it offers.
	complete := func(t *testing.T, words ...string) []string {
		t.Helper()
		script := `source <(chattyctl completion bash) || exit 1
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
_chattyctl_complete
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, append([]string{"--norc", "--noprofile", "-c", script, "bash"}, words...)...)
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("bash completion of %q: %v", words, err)
		}
		return strings.Fields(string(out))
	}
	tests := []struct {
		words []string
		want  []string
		not   []string
	}{
		{words: []string{"chattyctl", "--"}, want: []string{"--socket", "--config", "--verbose", "--help"}, not: []string{"-v", "status"}},
		{words: []string{"chattyctl", "-"}, want: []string{"--socket", "-v"}},
		{words: []string{"chattyctl", "--so"}, want: []string{"--socket"}, not: []string{"--config"}},
		{words: []string{"chattyctl", "watch", "--"}, want: []string{"--addr", "--signed", "--pubkey", "--tls"}},
		{words: []string{"chattyctl", "watch", "--p"}, want: []string{"--pubkey", "--pin"}, not: []string{"--addr"}},
		{words: []string{"chattyctl", "--socket", "/tmp/x", "watch", "--"}, want: []string{"--addr"}},
		{words: []string{"chattyctl", "status", "--"}, want: []string{"--json"}},
		{words: []string{"chattyctl", "stop", "--"}, want: []string{"--no-wait", "--timeout"}},
		{words: []string{"chattyctl", "top", "--"}, want: []string{"--interval", "--once"}},
		{words: []string{"chattyctl", "send", "--"}, want: []string{"--help"}},
		// Commands and types still complete.
		{words: []string{"chattyctl", "wa"}, want: []string{"watch"}},
		{words: []string{"chattyctl", "send", ""}, want: []string{"Warning"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.words, " "), func(t *testing.T) {
			got := complete(t, tt.words...)
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("completion of %q offers %q, want it to include %q", tt.words, got, w)
				}
			}
			for _, w := range tt.not {
				if slices.Contains(got, w) {
					t.Errorf("completion of %q offers %q, want it without %q", tt.words, got, w)
				}
			}
		})
	}
}

// TestManPage checks chattyctl's manual page: a synopsis that names every
// command and writes flags with their arguments, and a page that man
// renders without a warning.
func TestManPage(t *testing.T) {
	code, page, errOut := runCtl(t, "man")
	if code != 0 {
		t.Fatalf("man: exit %d: %s", code, errOut)
	}
	mantest.Check(t, page, []string{"chattyctl [--socket PATH] [--config FILE] [--verbose] COMMAND [ARGS]",
		" status ", " watch ", " send TYPE MESSAGE...", " scale N", " top ", " completion bash|zsh"}, []string{" man"})
}
