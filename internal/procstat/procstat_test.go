package procstat

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	stat := "1234 (chatty d) S 1 1230 1230 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 200"
	s, err := Parse([]byte(stat))
	want := Stat{State: 'S', PPID: 1, PGID: 1230, CPU: 3 * time.Second}
	if err != nil || s != want {
		t.Fatalf("Parse = %+v, %v; want %+v (300 ticks)", s, err, want)
	}
	// A command name holding ") " is skipped whole.
	s, err = Parse([]byte("7 (a) Z 9 (b) T 2 3 0 -1 0 0 0 0 0 1 1 0 0"))
	if err != nil || s.State != 'T' || s.PPID != 2 || s.PGID != 3 {
		t.Errorf("Parse with ') ' in the name = %+v, %v; want state T, parent 2, group 3", s, err)
	}
	bad := map[string]string{
		"empty":             "",
		"no name's end":     "1234 (x",
		"short":             "1234 (x) S 1 2",
		"utime not number":  "1234 (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 ab 50",
		"state two letters": "1234 (x) SS 1 1234 1234 0 -1 4194560 100 0 0 0 1 50",
		"state no letter":   "1234 (x) 0 1 1234 1234 0 -1 4194560 100 0 0 0 1 50",
		"parent not number": "1234 (x) S one 1234 1234 0 -1 4194560 100 0 0 0 1 50",
	}
	for name, b := range bad {
		if _, err := Parse([]byte(b)); err == nil {
			t.Errorf("%s: Parse accepted %q", name, b)
		}
	}
}

// Parse never panics, and what it accepts has a letter for its state.
func FuzzParse(f *testing.F) {
	f.Add([]byte("1234 (chatty d) S 1 1230 1230 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 200"))
	f.Add([]byte("7 (a) Z 9 (b) T 2 3 0 -1 0 0 0 0 0 1 1 0 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if c := s.State; err == nil && !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			t.Errorf("Parse(%q) = %+v: the state is no letter", b, s)
		}
	})
}

// This process: alive, its parent and group as the kernel has them.
func TestReadSelf(t *testing.T) {
	s, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The state is the main thread's, which may be asleep while another
	// runs this test: anything but a zombie.
	if s.Zombie() || s.PPID != os.Getppid() || s.PGID != syscall.Getpgrp() || !Alive(os.Getpid()) {
		t.Errorf("Read(self) = %+v; want alive, parent %d, group %d", s, os.Getppid(), syscall.Getpgrp())
	}
	if _, err := CPU(os.Getpid()); err != nil {
		t.Error(err)
	}
	if _, err := Read(-1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(-1): %v, want an error wrapping os.ErrNotExist", err)
	}
}
