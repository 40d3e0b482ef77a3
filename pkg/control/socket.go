package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SystemSocketPath is the socket of a chattyd run by root, as a system service.
const SystemSocketPath = "/run/chattyd/control.sock"

// DefaultSocketPath returns where chattyd listens when no path is
// configured: /run/chattyd/control.sock for root, otherwise
// $XDG_RUNTIME_DIR/chattyd/control.sock, or /tmp/chattyd-UID/control.sock
// when XDG_RUNTIME_DIR is unset. It creates nothing; Listen creates the
// directory.
func DefaultSocketPath() string {
	uid := os.Geteuid()
	if uid == 0 {
		return SystemSocketPath
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "chattyd", "control.sock")
	}
	return filepath.Join(os.TempDir(), "chattyd-"+strconv.Itoa(uid), "control.sock")
}

// SocketMode is the permission of a socket created by Listen: owner and
// group may connect, others may not.
const SocketMode = 0o660

// ErrInUse is wrapped by Listen's error when a live daemon answers on the path.
var ErrInUse = errors.New("control socket in use")

// umaskMu serializes Listen's umask changes, which are process-wide.
var umaskMu sync.Mutex

// Listen creates the control socket at path, safely:
//
//   - the directory is created if missing, mode 0750 for root and 0700
//     otherwise (with group set to group, when given, so its members can
//     reach the socket); an existing directory must not be writable by
//     others unless sticky, and for a non-root user must be theirs or root's;
//   - if a daemon answers on path, Listen fails with ErrInUse naming it;
//   - a stale socket (nobody answers) is removed; any other kind of file at
//     path is left alone and is an error;
//   - the socket is created with SocketMode by setting the umask around
//     bind (never chmod after), then given to group when group is not empty.
//
// The listener removes the socket file when closed. Listen changes the
// process umask for the duration of bind: call it early, before other
// goroutines create files.
func Listen(path, group string) (*net.UnixListener, error) {
	if path == "" {
		return nil, errors.New("control socket: empty path")
	}
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		gid = g
	}
	if err := prepareDir(filepath.Dir(path), gid); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}

	umaskMu.Lock()
	old := unix.Umask(0o777 &^ SocketMode)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("give control socket %s to group %s: %w", path, group, err)
		}
	}
	return ln, nil
}

func lookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("control socket group %q: %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("control socket group %q: bad gid %q", name, g.Gid)
	}
	return gid, nil
}

// prepareDir creates dir if missing and checks that nobody else can swap
// the socket inside it.
func prepareDir(dir string, gid int) error {
	euid := os.Geteuid()
	mode := fs.FileMode(0o700)
	if euid == 0 || gid >= 0 {
		mode = 0o750
	}
	if err := os.Mkdir(dir, mode); err == nil {
		// Mkdir is subject to the umask too; say what we mean.
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("control socket directory %s: %w", dir, err)
		}
		if gid >= 0 {
			if err := os.Lchown(dir, -1, gid); err != nil {
				return fmt.Errorf("give control socket directory %s to gid %d: %w", dir, gid, err)
			}
		}
		return nil
	} else if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create control socket directory: %w", err)
	}
	// The directory must be a real one (a symlink could be re-pointed),
	// owned by us or by root, and writable by nobody else: whoever can
	// write it can swap the socket for one of their own.
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("control socket directory %s is not a directory (a symlink is not accepted); remove it or choose another --control-socket", dir)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != euid && st.Uid != 0 {
		return fmt.Errorf("control socket directory %s belongs to uid %d, not to chattyd's user (uid %d) or root; remove it or choose another --control-socket", dir, st.Uid, euid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("control socket directory %s is writable by others (mode %04o); make it writable only by its owner (chmod go-w) or choose another --control-socket", dir, fi.Mode().Perm())
	}
	return nil
}

// removeStale makes path free for bind: absent, or a socket nobody answers
// on, which it removes.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control socket %s exists and is not a socket but %s; not removing it, choose another path", path, fileKind(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: another chattyd is listening on %s", ErrInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a named pipe"
	}
	return "a special file"
}
