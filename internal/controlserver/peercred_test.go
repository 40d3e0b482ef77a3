package controlserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/controlserver"

	"github.com/chatty-dev/chatty/internal/controlserver/controltest"
	"github.com/chatty-dev/chatty/pkg/control/client"
)

// helperEnv, when set to "ACTION SOCKET", makes the test binary act as a
// control client instead of running tests, or, for "wait", wait for its
// standard input to close; see runHelper.
const helperEnv = "CHATTY_CONTROL_HELPER"

// runHelper performs one call and prints "ok" or the error.
func runHelper() int {
	action, path, _ := strings.Cut(os.Getenv(helperEnv), " ")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := client.New(path)
	var err error
	switch action {
	case "status":
		_, err = c.Status(ctx)
	case "scale":
		_, err = c.Scale(ctx, 1)
	case "stop":
		err = c.Stop(ctx)
	case "wait":
		// Just be a process that the test started: until stdin closes.
		_, err = io.Copy(io.Discard, os.Stdin)
	default:
		err = fmt.Errorf("unknown helper action %q", action)
	}
	var ae *client.APIError
	switch {
	case err == nil:
		fmt.Println("ok")
	case errors.As(err, &ae):
		fmt.Printf("%d %s\n", ae.Status, ae.Message)
	default:
		fmt.Println(err)
	}
	return 0
}

// asUser runs the test binary as uid:gid (no supplementary groups) to
// perform one call on the socket at path, and returns what it printed.
func asUser(t *testing.T, bin string, uid, gid uint32, action, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), helperEnv+"="+action+" "+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", uid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// helperBinary copies the test binary where another user can run it: the
// go tool's build directory is private to root.
func helperBinary(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "helper")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestPeerCredentials runs clients as the unprivileged uid 65534 against a
// server run by root: reads are allowed, changes only to the group.
func TestPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid (uid 65534); run the tests as root to cover peer credentials")
	}
	const nobody = 65534
	g, err := user.LookupGroupId(fmt.Sprint(nobody))
	if err != nil {
		t.Skipf("no group with gid %d on this machine: %v", nobody, err)
	}
	dir := controltest.SocketDir(t)
	if err := os.Chmod(dir, 0o755); err != nil { // traversable by uid 65534
		t.Fatal(err)
	}
	bin := helperBinary(t, dir)

	t.Run("reads allowed, changes refused", func(t *testing.T) {
		b := newFake()
		srv := controltest.Serve(t, b, controlserver.Options{Path: filepath.Join(dir, "a.sock")})
		// Open the socket to everyone, as only the credentials check is tested here.
		if err := os.Chmod(srv.Addr(), 0o666); err != nil {
			t.Fatal(err)
		}
		if got := asUser(t, bin, nobody, nobody, "status", srv.Addr()); got != "ok" {
			t.Fatalf("GET status as uid %d: %s", nobody, got)
		}
		for _, action := range []string{"scale", "stop"} {
			got := asUser(t, bin, nobody, nobody, action, srv.Addr())
			if !strings.HasPrefix(got, "403 ") || !strings.Contains(got, "uid 65534") {
				t.Fatalf("%s as uid %d = %q; want 403 naming the uid", action, nobody, got)
			}
		}
		if calls := b.Calls(); !slices.Equal(calls, []string{"status"}) {
			t.Fatalf("backend calls = %q; want only the status read", calls)
		}
	})

	t.Run("group member may change", func(t *testing.T) {
		b := newFake()
		srv := controltest.Serve(t, b, controlserver.Options{Path: filepath.Join(dir, "b.sock"), Group: g.Name})
		fi, err := os.Lstat(srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Gid != nobody || fi.Mode().Perm() != 0o660 {
			t.Fatalf("socket gid %d mode %v; want gid %d mode 0660", st.Gid, fi.Mode().Perm(), nobody)
		}
		if got := asUser(t, bin, nobody, nobody, "scale", srv.Addr()); got != "ok" {
			t.Fatalf("scale as a member of %s: %s", g.Name, got)
		}
		if calls := b.Calls(); !slices.Equal(calls, []string{"scale 1"}) {
			t.Fatalf("backend calls = %q; want the scale", calls)
		}
	})

	t.Run("socket closed to others", func(t *testing.T) {
		b := newFake()
		srv := controltest.Serve(t, b, controlserver.Options{Path: filepath.Join(dir, "c.sock")})
		got := asUser(t, bin, nobody, nobody, "status", srv.Addr())
		want := "permission denied on " + srv.Addr() + " (owner root, group root, mode 0660)"
		if !strings.HasPrefix(got, want) {
			t.Fatalf("status as uid %d = %q; want it to start with %q", nobody, got, want)
		}
		if calls := b.Calls(); len(calls) != 0 {
			t.Fatalf("backend calls = %q; want none", calls)
		}
	})
}
