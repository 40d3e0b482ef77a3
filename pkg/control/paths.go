package control

import (
	"os"
	"path/filepath"
	"strconv"
)

// SystemSocketPath is the socket of a chattyd run by root, as a system service.
const SystemSocketPath = "/run/chattyd/control.sock"

// DefaultSocketPath returns where chattyd listens when no path is
// configured: /run/chattyd/control.sock for root, otherwise
// $XDG_RUNTIME_DIR/chattyd/control.sock, or chattyd-UID/control.sock in
// os.TempDir ($TMPDIR, else /tmp) when XDG_RUNTIME_DIR is unset. It creates nothing; Listen creates the
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

// LockPath returns the lock file of the control socket at path: path with
// ".lock" appended, in the same directory.
func LockPath(path string) string { return path + ".lock" }
