package logging

import (
	"os"

	"golang.org/x/sys/unix"
)

func stderrIs(dev, ino uint64) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(os.Stderr.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}
