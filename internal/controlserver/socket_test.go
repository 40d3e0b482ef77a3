package controlserver_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/controlserver"

	"github.com/chatty-dev/chatty/internal/controlserver/controltest"
	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
)

func TestSecondServerRefused(t *testing.T) {
	srv := controltest.Serve(t, newFake(), controlserver.Options{})
	_, err := controlserver.New(controlserver.Options{Path: srv.Addr()}, newFake(), logging.Discard())
	if !errors.Is(err, controlserver.ErrInUse) || !strings.Contains(err.Error(), srv.Addr()) {
		t.Fatalf("second New = %v; want ErrInUse naming %s", err, srv.Addr())
	}
	// The first server still answers.
	if _, err := client.New(srv.Addr()).Status(t.Context()); err != nil {
		t.Fatalf("first server after refused second: %v", err)
	}
}

// staleSocket leaves at path what a daemon that died leaves: a socket
// file nobody answers on.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("stale socket not in place: %v", err)
	}
}

// holdLock takes the lock of the socket at path as another daemon would,
// and returns the descriptor; closing it releases the lock.
func holdLock(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(control.LockPath(path), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", f.Name(), err)
	}
	return f
}

// reachable checks that a connection to path reaches ln.
func reachable(t *testing.T, ln *controlserver.SocketListener, path string) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer c.Close()
	// The connection is queued already: Accept returns at once unless it
	// went to another listener. The deadline only bounds that failure.
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	defer ln.SetDeadline(time.Time{})
	a, err := ln.Accept()
	if err != nil {
		t.Fatalf("a connection to %s did not reach the listener: %v", path, err)
	}
	a.Close()
}

// refusedByLock checks that err is Listen's refusal of a locked path.
func refusedByLock(t *testing.T, err error, path string) {
	t.Helper()
	want := "another chattyd holds " + path
	if !errors.Is(err, controlserver.ErrInUse) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Listen = %v; want ErrInUse saying %q", err, want)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	tests := []struct {
		name string
		lock func(t *testing.T, path string)
	}{
		{"no lock file", func(*testing.T, string) {}},
		// The lock file stays when its daemon dies; the kernel releases
		// the lock when it closes the daemon's descriptors.
		{"lock file of a dead daemon", func(t *testing.T, path string) { holdLock(t, path).Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(controltest.SocketDir(t), "c.sock")
			staleSocket(t, path)
			tt.lock(t, path)
			controltest.Serve(t, newFake(), controlserver.Options{Path: path})
			if _, err := client.New(path).Status(t.Context()); err != nil {
				t.Fatalf("server on a stale socket's path: %v", err)
			}
		})
	}
}

// A second listener on the path of a first fails at once on the lock,
// naming the path, and leaves the first reachable; once the first is
// closed, another takes the path.
func TestListenLocked(t *testing.T) {
	path := filepath.Join(controltest.SocketDir(t), "c.sock")
	first, err := controlserver.Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = controlserver.Listen(path, "")
	refusedByLock(t, err, path)
	reachable(t, first, path)

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(control.LockPath(path)); err != nil {
		t.Errorf("the lock file after Close: %v; want it left in place", err)
	}
	next, err := controlserver.Listen(path, "")
	if err != nil {
		t.Fatalf("Listen after the first closed: %v", err)
	}
	defer next.Close()
	reachable(t, next, path)
}

// A daemon that answers on the path but holds no lock (an older chattyd,
// or a socket systemd listens on) is found by the stale check: Listen
// fails naming the path, leaves that socket alone, and lets go of the
// lock it took, so that the path is free once that daemon is gone.
func TestLiveSocketWithoutLockRefused(t *testing.T) {
	path := filepath.Join(controltest.SocketDir(t), "c.sock")
	live, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	before, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = controlserver.Listen(path, "")
	if want := "another chattyd is listening on " + path; !errors.Is(err, controlserver.ErrInUse) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Listen = %v; want ErrInUse saying %q", err, want)
	}
	if after, err := os.Lstat(path); err != nil || !os.SameFile(before, after) {
		t.Fatalf("the live socket was replaced: %v", err)
	}

	live.Close() // removes its file
	ln, err := controlserver.Listen(path, "")
	if err != nil {
		t.Fatalf("Listen once the live socket is gone (the refused Listen must not keep the lock): %v", err)
	}
	defer ln.Close()
	reachable(t, ln, path)
}

// A daemon that holds the lock may be between its stale check and its
// bind: the stale socket is its to replace, and nobody else's.
func TestLockHolderKeepsStaleSocket(t *testing.T) {
	path := filepath.Join(controltest.SocketDir(t), "c.sock")
	staleSocket(t, path)
	before, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	lock := holdLock(t, path)
	_, err = controlserver.Listen(path, "")
	refusedByLock(t, err, path)
	if after, err := os.Lstat(path); err != nil || !os.SameFile(before, after) {
		t.Fatalf("the stale socket was replaced while another held the lock: %v", err)
	}

	lock.Close()
	ln, err := controlserver.Listen(path, "")
	if err != nil {
		t.Fatalf("Listen once the lock is free: %v", err)
	}
	defer ln.Close()
	reachable(t, ln, path)
}

// Two daemons starting at once on a stale socket's path: exactly one
// wins, the other is refused, and the winner's socket stays in place.
func TestListenRace(t *testing.T) {
	dir := controltest.SocketDir(t)
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	for i := range rounds {
		path := filepath.Join(dir, fmt.Sprintf("%d.sock", i))
		staleSocket(t, path)
		var (
			lns  [2]*controlserver.SocketListener
			errs [2]error
			wg   sync.WaitGroup
		)
		start := make(chan struct{})
		for j := range lns {
			wg.Go(func() {
				<-start
				lns[j], errs[j] = controlserver.Listen(path, "")
			})
		}
		close(start)
		wg.Wait()
		var won []*controlserver.SocketListener
		for j, ln := range lns {
			if errs[j] == nil {
				won = append(won, ln)
				t.Cleanup(func() { ln.Close() })
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d of 2 listeners won (errors %v); want exactly 1", i, len(won), errs)
		}
		for _, err := range errs {
			if err != nil {
				refusedByLock(t, err, path)
			}
		}
		reachable(t, won[0], path)
		won[0].Close()
	}
}

// The lock is not inherited by the processes the daemon starts: once the
// listener is closed, the path is free even though they still run.
func TestLockNotInherited(t *testing.T) {
	path := filepath.Join(controltest.SocketDir(t), "c.sock")
	ln, err := controlserver.Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(self)
	child.Env = append(os.Environ(), helperEnv+"=wait -")
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Start returns once the child has exec'd: its descriptors are set.
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	defer stdin.Close()

	ln.Close()
	next, err := controlserver.Listen(path, "")
	if err != nil {
		t.Fatalf("Listen while a process started by the first listener's owner runs: %v", err)
	}
	next.Close()
}

// Only a regular file is taken as the lock; anything else at its path is
// refused, not followed, and opening it never hangs (a FIFO).
func TestLockFileKinds(t *testing.T) {
	dir := controltest.SocketDir(t)
	tests := []struct {
		name string
		make func(lock string) error
		want string
	}{
		{"symlink", func(l string) error { return os.Symlink(filepath.Join(dir, "elsewhere"), l) }, "is a symbolic link"},
		{"fifo", func(l string) error { return syscall.Mkfifo(l, 0o600) }, "not a regular file but a named pipe"},
		{"directory", func(l string) error { return os.Mkdir(l, 0o700) }, "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".sock")
			if err := tt.make(control.LockPath(path)); err != nil {
				t.Fatal(err)
			}
			_, err := controlserver.Listen(path, "")
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), control.LockPath(path)) {
				t.Fatalf("Listen = %v; want an error naming %s and saying %q", err, control.LockPath(path), tt.want)
			}
			if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a socket was created without the lock: %v", err)
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("the lock's symbolic link was followed")
	}
}

func TestNonSocketNotRemoved(t *testing.T) {
	dir := controltest.SocketDir(t)
	tests := []struct {
		name string
		make func(path string) error
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("precious"), 0o600) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"symlink to a file", func(p string) error {
			if err := os.WriteFile(p+".target", []byte("precious"), 0o600); err != nil {
				return err
			}
			return os.Symlink(p+".target", p)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := tt.make(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(path)
			_, err := controlserver.New(controlserver.Options{Path: path}, newFake(), logging.Discard())
			if err == nil || !strings.Contains(err.Error(), "not a socket") || !strings.Contains(err.Error(), path) {
				t.Fatalf("New = %v; want a 'not a socket' error naming %s", err, path)
			}
			after, err := os.Lstat(path)
			if err != nil || !os.SameFile(before, after) {
				t.Fatalf("the file at %s was touched: %v", path, err)
			}
			if _, err := os.Lstat(control.LockPath(path)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a lock file was left beside %s: %v", path, err)
			}
		})
	}
}

func TestSocketMode(t *testing.T) {
	// A permissive umask must not widen the socket's mode.
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(controltest.SocketDir(t), "c.sock")
	ln, err := controlserver.Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v; want socket 0660", fi.Mode())
	}
	if fi, err := os.Lstat(control.LockPath(path)); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, %v; want a regular file 0600", fi, err)
	}
	if cur := syscall.Umask(0); cur != 0 {
		t.Errorf("umask after Listen = %#o; want it restored to 0", cur)
	}
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file not removed on Close: %v", err)
	}
}

func TestListenCreatesDirectory(t *testing.T) {
	path := filepath.Join(controltest.SocketDir(t), "run", "c.sock")
	ln, err := controlserver.Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	want := fs.FileMode(0o700)
	if os.Geteuid() == 0 {
		want = 0o750
	}
	if fi.Mode().Perm() != want {
		t.Errorf("directory mode = %v; want %v", fi.Mode().Perm(), want)
	}
}

func TestListenRefusesOpenDirectory(t *testing.T) {
	dir := filepath.Join(controltest.SocketDir(t), "open")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := controlserver.Listen(filepath.Join(dir, "c.sock"), "")
	if err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Fatalf("Listen in a 0777 directory = %v; want a refusal", err)
	}
}

// Whoever can write the socket's directory, or re-point it, could swap
// the socket for their own: such directories are refused.
func TestListenRefusesUnsafeDirectories(t *testing.T) {
	base := controltest.SocketDir(t)
	sticky := filepath.Join(base, "sticky")
	if err := os.Mkdir(sticky, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, 0o1777); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(os.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	groupw := filepath.Join(base, "groupw")
	if err := os.Mkdir(groupw, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(groupw, 0o770); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{sticky: "writable by others", link: "not a directory", groupw: "writable by others"}
	if os.Geteuid() == 0 {
		other := filepath.Join(base, "other")
		if err := os.Mkdir(other, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cases[other] = "belongs to uid 65534"
	}
	for dir, want := range cases {
		_, err := controlserver.Listen(filepath.Join(dir, "c.sock"), "")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Listen in %s = %v; want a refusal saying %q", filepath.Base(dir), err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(os.TempDir(), "c.sock")); err == nil {
		t.Error("a socket was created through the symlink")
	}
}

func TestListenUnknownGroup(t *testing.T) {
	_, err := controlserver.Listen(filepath.Join(controltest.SocketDir(t), "c.sock"), "no-such-group-chatty")
	if err == nil || !strings.Contains(err.Error(), "no-such-group-chatty") {
		t.Fatalf("Listen with an unknown group = %v; want an error naming it", err)
	}
}

func TestDefaultSocketPath(t *testing.T) {
	got := control.DefaultSocketPath()
	if os.Geteuid() == 0 {
		if got != "/run/chattyd/control.sock" {
			t.Fatalf("DefaultSocketPath() as root = %q", got)
		}
		return
	}
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if got := control.DefaultSocketPath(); got != "/run/user/1000/chattyd/control.sock" {
		t.Fatalf("DefaultSocketPath() = %q", got)
	}
}

func TestClientConnErrors(t *testing.T) {
	dir := controltest.SocketDir(t)
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("not a socket\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		path       string
		want       string
		notRunning bool
	}{
		{"missing", filepath.Join(dir, "none.sock"), "cannot reach chattyd at " + filepath.Join(dir, "none.sock") + ": no such file; is chattyd running?", true},
		{"stale", stale, "connection refused (a stale socket); is chattyd running?", true},
		{"regular file", file, "cannot reach chattyd at " + file + ": it is a regular file, not a socket; check --socket", false},
		{"link to a regular file", link, "it is a regular file, not a socket", false},
		{"directory", dir, "it is a directory, not a socket", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.New(tt.path).Status(t.Context())
			var ce *client.ConnError
			if !errors.As(err, &ce) || ce.NotRunning() != tt.notRunning {
				t.Fatalf("error = %T %v; want a *client.ConnError, NotRunning %v", err, err, tt.notRunning)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}
