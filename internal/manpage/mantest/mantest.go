// Package mantest checks a generated manual page, for the tests of both
// binaries' man commands.
package mantest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Check fails the test unless page has a SYNOPSIS that writes flags with
// their arguments (never urfave/cli's [--flag]=[value]), holds every want
// and none of hidden, and renders with man -l without a warning (when
// man-db is installed).
func Check(t testing.TB, page string, want, hidden []string) {
	t.Helper()
	_, syn, ok := strings.Cut(page, ".SH SYNOPSIS\n")
	if !ok {
		t.Fatalf("no SYNOPSIS in:\n%s", page)
	}
	syn, _, _ = strings.Cut(syn, ".SH ")
	if strings.Contains(syn, "]=[value]") {
		t.Errorf("SYNOPSIS writes flags as [--flag]=[value]:\n%s", syn)
	}
	for _, w := range want {
		if !strings.Contains(syn, w) {
			t.Errorf("SYNOPSIS lacks %q:\n%s", w, syn)
		}
	}
	for _, h := range hidden {
		if strings.Contains(syn, h) {
			t.Errorf("SYNOPSIS names the hidden %q:\n%s", h, syn)
		}
	}
	man, err := exec.LookPath("man")
	if err != nil {
		t.Log("man is not installed: the page is not rendered")
		return
	}
	cmd := exec.Command(man, "--warnings", "-l", "-")
	cmd.Stdin = strings.NewReader(page)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "PAGER=cat")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("man -l: %v: %s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("man -l warns:\n%s", stderr.String())
	}
	if !strings.Contains(string(out), "SYNOPSIS") {
		t.Errorf("man -l rendered no SYNOPSIS:\n%s", out)
	}
}
