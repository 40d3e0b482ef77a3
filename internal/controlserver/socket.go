package controlserver

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

	"github.com/chatty-dev/chatty/pkg/control"
	"golang.org/x/sys/unix"
)

// SocketMode is the permission of a socket created by Listen: owner and
// group may connect, others may not.
const SocketMode = 0o660

// LockMode is the permission of the lock file Listen creates beside the
// socket: only its owner may open it.
const LockMode = 0o600

// ErrInUse is wrapped by Listen's error when another daemon holds the
// socket's lock or a live daemon answers on the path.
var ErrInUse = errors.New("control socket in use")

// umaskMu serializes Listen's umask changes, which are process-wide.
var umaskMu sync.Mutex

// Listen creates the control socket at path, safely: it checks the
// directory, takes the lock file LockPath(path) before it looks at path,
// refuses a path that is not a socket or where a daemon answers
// (ErrInUse), replaces a stale socket, and binds with SocketMode under a
// umask, giving the socket to group when set. docs/control.md, "Where the
// socket is", says each step and why; keep the two in step.
//
// The listener holds the lock until it is closed. Listen changes the
// process umask for the duration of bind: call it early, before other
// goroutines create files.
func Listen(path, group string) (*SocketListener, error) {
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
	// A path that is no socket is refused before its lock file is made:
	// the lock would only be litter beside a file that was never ours.
	if _, err := existingSocket(path); err != nil {
		return nil, err
	}
	lock, err := lockSocket(path)
	if err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		lock.Close()
		return nil, err
	}

	umaskMu.Lock()
	old := unix.Umask(0o777 &^ SocketMode)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	sl := &SocketListener{UnixListener: ln, lock: lock}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			sl.Close()
			return nil, fmt.Errorf("give control socket %s to group %s: %w", path, group, err)
		}
	}
	return sl, nil
}

// SocketListener is a control socket made by Listen: a Unix listener
// that holds the socket's lock until it is closed.
type SocketListener struct {
	*net.UnixListener
	lock       *os.File
	unlockOnce sync.Once
}

// Close closes the listener, which removes the socket file, and only then
// releases the lock: the next daemon to take it finds the path free, never
// a socket that is about to be removed under it.
func (l *SocketListener) Close() error {
	err := l.UnixListener.Close()
	l.unlockOnce.Do(func() { l.lock.Close() })
	return err
}

// lockSocket opens the lock file of the socket at path, creating it if
// missing, and locks it without waiting. The descriptor is close-on-exec.
func lockSocket(path string) (*os.File, error) {
	lockPath := control.LockPath(path)
	// O_NOFOLLOW: a symbolic link is refused, not followed. O_NONBLOCK:
	// opening a FIFO put there must not hang; the kind is checked below.
	fd, err := unix.Open(lockPath, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, LockMode)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("control socket lock %s is a symbolic link; not following it: remove it or choose another --control-socket", lockPath)
	}
	if err != nil {
		return nil, fmt.Errorf("control socket lock: %w", &fs.PathError{Op: "open", Path: lockPath, Err: err})
	}
	f := os.NewFile(uintptr(fd), lockPath)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("control socket lock: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("control socket lock %s is not a regular file but %s; remove it or choose another --control-socket", lockPath, fileKind(fi.Mode()))
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: another chattyd holds %s (its lock %s is taken); stop that chattyd first (chattyctl --socket %s stop) or choose another --control-socket", ErrInUse, path, lockPath, path)
		}
		return nil, fmt.Errorf("lock control socket %s: %w", lockPath, err)
	}
	return f, nil
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
	if exists, err := existingSocket(path); !exists || err != nil {
		return err
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

// existingSocket reports whether path exists, and fails if it is anything
// but a socket.
func existingSocket(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return true, fmt.Errorf("control socket %s exists and is not a socket but %s; not removing it, choose another path", path, fileKind(fi.Mode()))
	}
	return true, nil
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
	case fs.ModeSocket:
		return "a socket"
	}
	return "a special file"
}
