package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/chatty-dev/chatty/internal/procstat"
	"github.com/chatty-dev/chatty/pkg/control/client"
)

func chattyctl(bin, sock string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"--socket", sock}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

type statusView struct {
	connected, running, slots int
	retained                  int64 // bytes
}

func readStatus(ctx context.Context, ctl *client.Client) (statusView, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := ctl.Status(ctx)
	if err != nil {
		return statusView{}, err
	}
	return statusView{st.Clients.Connected, st.Pool.Running, len(st.Pool.Slots), st.Stream.Bytes}, nil
}

func waitClients(ctx context.Context, ctl *client.Client, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := readStatus(ctx, ctl)
		if err == nil && st.connected >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d subscribers connected, want %d", st.connected, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sample(ctx context.Context, ctl *client.Client, pid int, at time.Duration) (Sample, error) {
	s := Sample{At: at}
	var err error
	if s.RSS, err = vmRSS(pid); err != nil {
		return s, err
	}
	if s.FDs, err = countFDs(pid); err != nil {
		return s, err
	}
	if s.Goroutines, err = goroutines(ctx, ctl); err != nil {
		return s, err
	}
	st, err := readStatus(ctx, ctl)
	s.Workers, s.Clients, s.Retained = st.running, st.connected, st.retained
	return s, err
}

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func countFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// goroutines reads go_goroutines from chattyd's /metrics.
func goroutines(ctx context.Context, ctl *client.Client) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := ctl.Metric(ctx, "go_goroutines")
	return int(n), err
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// childZombies returns the zombie children of pid.
func childZombies(pid int) map[int]bool {
	out := make(map[int]bool)
	for _, p := range allPIDs() {
		if st, err := procstat.Read(p); err == nil && st.PPID == pid && st.Zombie() {
			out[p] = true
		}
	}
	return out
}

// groupProcs returns the processes left in process group pgid.
func groupProcs(pgid int) []int {
	var out []int
	for _, p := range allPIDs() {
		if st, err := procstat.Read(p); err == nil && st.PGID == pgid {
			out = append(out, p)
		}
	}
	return out
}
