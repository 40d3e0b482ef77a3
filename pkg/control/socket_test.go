package control_test

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/pkg/control/controltest"
	"github.com/chatty-dev/chatty/pkg/logging"
)

func TestSecondServerRefused(t *testing.T) {
	srv := controltest.Serve(t, newFake(), control.Options{})
	_, err := control.New(control.Options{Path: srv.Addr()}, newFake(), logging.Discard())
	if !errors.Is(err, control.ErrInUse) || !strings.Contains(err.Error(), srv.Addr()) {
		t.Fatalf("second New = %v; want ErrInUse naming %s", err, srv.Addr())
	}
	// The first server still answers.
	if _, err := client.New(srv.Addr()).Status(t.Context()); err != nil {
		t.Fatalf("first server after refused second: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(controltest.SocketDir(t), "c.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a daemon that died: the file stays, nobody answers
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("stale socket not in place: %v", err)
	}
	srv := controltest.Serve(t, newFake(), control.Options{Path: path})
	if _, err := client.New(path).Status(t.Context()); err != nil {
		t.Fatalf("server on a stale socket's path: %v", err)
	}
	_ = srv
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
			_, err := control.New(control.Options{Path: path}, newFake(), logging.Discard())
			if err == nil || !strings.Contains(err.Error(), "not a socket") || !strings.Contains(err.Error(), path) {
				t.Fatalf("New = %v; want a 'not a socket' error naming %s", err, path)
			}
			after, err := os.Lstat(path)
			if err != nil || !os.SameFile(before, after) {
				t.Fatalf("the file at %s was touched: %v", path, err)
			}
		})
	}
}

func TestSocketMode(t *testing.T) {
	// A permissive umask must not widen the socket's mode.
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(controltest.SocketDir(t), "c.sock")
	ln, err := control.Listen(path, "")
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
	ln, err := control.Listen(path, "")
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
	_, err := control.Listen(filepath.Join(dir, "c.sock"), "")
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
		_, err := control.Listen(filepath.Join(dir, "c.sock"), "")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Listen in %s = %v; want a refusal saying %q", filepath.Base(dir), err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(os.TempDir(), "c.sock")); err == nil {
		t.Error("a socket was created through the symlink")
	}
}

func TestListenUnknownGroup(t *testing.T) {
	_, err := control.Listen(filepath.Join(controltest.SocketDir(t), "c.sock"), "no-such-group-chatty")
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
	tests := []struct {
		name string
		path string
		want string
	}{
		{"missing", filepath.Join(dir, "none.sock"), "cannot reach chattyd at " + filepath.Join(dir, "none.sock") + ": no such file; is chattyd running?"},
		{"stale", stale, "connection refused (a stale socket); is chattyd running?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.New(tt.path).Status(t.Context())
			var ce *client.ConnError
			if !errors.As(err, &ce) || !ce.NotRunning() {
				t.Fatalf("error = %T %v; want a *client.ConnError that is NotRunning", err, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}
