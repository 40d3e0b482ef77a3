package demofeed

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

var lineRE = regexp.MustCompile(`^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ([A-Za-z0-9+/]+=*)\n$`)

func TestAppendLine(t *testing.T) {
	now := time.Date(2024, 7, 6, 2, 19, 4, 0, time.Local)
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[int]bool{}
	for range 2000 {
		line := string(AppendLine(nil, now, rng))
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %q does not look like a feed line", line)
		}
		if m[1] != "2024-07-06 02:19:04" {
			t.Fatalf("timestamp %q", m[1])
		}
		raw, err := base64.StdEncoding.DecodeString(m[2])
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		seen[len(raw)] = true
	}
	for n := 1; n <= 32; n++ {
		if !seen[n] {
			t.Errorf("never saw %d random bytes", n)
		}
	}
	if seen[0] || seen[33] {
		t.Errorf("random byte counts outside 1..32: %v", seen)
	}
}

func TestRunCount(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), &out, Options{Count: 5000}); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(out.String(), "\n")
	if len(lines) != 5001 || lines[5000] != "" {
		t.Fatalf("wrote %d lines, want 5000", len(lines)-1)
	}
	for _, l := range lines[:5000] {
		if !lineRE.MatchString(l) {
			t.Fatalf("bad line %q", l)
		}
	}
}

func TestRunKeepsTheRate(t *testing.T) {
	var out bytes.Buffer
	t0 := time.Now()
	if err := Run(context.Background(), &out, Options{Rate: 100, Count: 11}); err != nil {
		t.Fatal(err)
	}
	// The 11th line is due 100ms after the first.
	if d := time.Since(t0); d < 100*time.Millisecond {
		t.Errorf("11 lines at 100/s took %s, want at least 100ms", d)
	}
	if n := strings.Count(out.String(), "\n"); n != 11 {
		t.Errorf("wrote %d lines, want 11", n)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- Run(ctx, &bytes.Buffer{}, Options{Rate: 1}) }()
	cancel()
	select {
	case err := <-res:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

type brokenPipe struct{}

func (brokenPipe) Write([]byte) (int, error) { return 0, syscall.EPIPE }

func TestRunReportsWriteErrors(t *testing.T) {
	err := Run(context.Background(), brokenPipe{}, Options{})
	if !errors.Is(err, syscall.EPIPE) {
		t.Errorf("Run = %v, want an error wrapping EPIPE", err)
	}
	if err := Run(context.Background(), brokenPipe{}, Options{Rate: -1}); err == nil {
		t.Error("a negative rate was accepted")
	}
}
