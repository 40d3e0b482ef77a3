// Package procstat reads what chatty needs to know of a process from
// Linux's /proc/PID/stat: its state, parent, process group and CPU time.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc's times: 100 on every Linux.
const clockTicks = 100

// Stat is what /proc/PID/stat says about a process.
type Stat struct {
	State byte          // R, S, D, Z (zombie), X, T (stopped), t (traced)...
	PPID  int           // parent
	PGID  int           // process group
	CPU   time.Duration // user and system time, all threads together
}

// Zombie reports whether the process has exited and waits to be reaped.
func (s Stat) Zombie() bool { return s.State == 'Z' || s.State == 'X' }

// Alive reports whether pid names a process that has not exited: it is
// in /proc and not a zombie.
func Alive(pid int) bool {
	s, err := Read(pid)
	return err == nil && !s.Zombie()
}

// Read reads /proc/PID/stat. It fails with an error wrapping
// os.ErrNotExist when there is no such process, not even a zombie.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, syscall.ESRCH) { // gone between open and read
			err = fmt.Errorf("%w: %w", os.ErrNotExist, err)
		}
		return Stat{}, err
	}
	s, err := Parse(b)
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return s, nil
}

// CPU returns the user and system time process pid has used, all its
// threads together.
func CPU(pid int) (time.Duration, error) {
	s, err := Read(pid)
	return s.CPU, err
}

// Parse reads the text of /proc/PID/stat:
// "pid (comm) state ppid pgrp ... utime stime ...".
func Parse(b []byte) (Stat, error) {
	// comm, field 2, is in parentheses and may hold spaces and ')':
	// start after the last one.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 { // f[0] is field 3 (state); utime is 14, stime 15
		return Stat{}, fmt.Errorf("too short: %q", b)
	}
	if c := f[0][0]; len(f[0]) != 1 || !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
		return Stat{}, fmt.Errorf("state %q is not one letter", f[0])
	}
	var nums [4]int64
	for j, k := range []int{1, 2, 11, 12} {
		n, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return Stat{}, fmt.Errorf("field %d: %w", k+3, err)
		}
		nums[j] = n
	}
	return Stat{
		State: f[0][0],
		PPID:  int(nums[0]),
		PGID:  int(nums[1]),
		CPU:   time.Duration(nums[2]+nums[3]) * time.Second / clockTicks,
	}, nil
}
