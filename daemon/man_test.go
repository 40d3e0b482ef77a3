package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestManPage checks chattyd's manual page: a synopsis with the daemon's
// flags and their arguments and every command, that man renders without
// a warning.
func TestManPage(t *testing.T) {
	code, page, errOut := runChattyd(t, "man")
	if code != 0 {
		t.Fatalf("man: exit %d: %s", code, errOut)
	}
	_, syn, ok := strings.Cut(page, ".SH SYNOPSIS\n")
	if !ok {
		t.Fatalf("no SYNOPSIS in:\n%s", page)
	}
	syn, _, _ = strings.Cut(syn, ".SH ")
	if strings.Contains(syn, "]=[value]") {
		t.Errorf("SYNOPSIS writes flags as [--flag]=[value]:\n%s", syn)
	}
	for _, want := range []string{"chattyd [--config FILE] [--demo] [--listen HOST:PORT]", "[--control-socket PATH]",
		" check-config [OPTIONS] [FILE]", " print-config ", " keygen ", " worker ", " demo-feed "} {
		if !strings.Contains(syn, want) {
			t.Errorf("SYNOPSIS lacks %q:\n%s", want, syn)
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
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "SYNOPSIS") {
		t.Fatalf("man -l: %v: %s\n%s", err, stderr.String(), out)
	}
	if stderr.Len() > 0 {
		t.Errorf("man -l warns:\n%s", stderr.String())
	}
}
