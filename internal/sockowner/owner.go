package sockowner

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxDescendants bounds the processes looked at below one candidate, so
// that a worker that forks without end cannot make a lookup slow.
const maxDescendants = 256

// Find returns the candidate whose process, or one of its descendants,
// holds the socket at the other end of conn. See PeerInode and Owner.
func Find(conn net.Conn, candidates []int) (int, error) {
	ino, err := PeerInode(conn)
	if err != nil {
		return 0, err
	}
	return Owner(ino, candidates)
}

// Owner returns the candidate pid whose process, or one of its
// descendants (the members of a worker's process group, say, when the
// worker is a shell wrapper), has the socket with this inode open. The
// candidates' own descriptors are looked at first, their children's only
// if none has it. Descendants are found through
// /proc/PID/task/TID/children, not by reading all of /proc.
//
// It fails with ErrNoOwner, joined with the reasons some processes could
// not be read (such as another user's process).
func Owner(inode uint64, candidates []int) (int, error) {
	target := []byte("socket:[" + strconv.FormatUint(inode, 10) + "]")
	var unreadable []error
	// Breadth first: each level is a list of (pid, candidate it is under).
	type proc struct{ pid, root int }
	level := make([]proc, 0, len(candidates))
	for _, c := range candidates {
		if c > 0 {
			level = append(level, proc{c, c})
		}
	}
	seen := make(map[int]bool, len(level))
	under := make(map[int]int, len(candidates)) // processes looked at per candidate
	var buf [64]byte
	for len(level) > 0 {
		looked := level[:0]
		for _, p := range level {
			if seen[p.pid] || under[p.root] >= maxDescendants {
				continue
			}
			seen[p.pid] = true
			under[p.root]++
			ok, err := holds(p.pid, target, buf[:])
			if ok {
				return p.root, nil
			}
			if err != nil {
				unreadable = append(unreadable, err)
				continue
			}
			looked = append(looked, p)
		}
		// Only when no process of this level has it: their children.
		var next []proc
		for _, p := range looked {
			for _, c := range children(p.pid) {
				next = append(next, proc{c, p.root})
			}
		}
		level = next
	}
	err := fmt.Errorf("sockowner: socket inode %d in pids %v: %w", inode, candidates, ErrNoOwner)
	if len(unreadable) > 0 {
		return 0, errors.Join(err, errors.Join(unreadable...))
	}
	return 0, err
}

// holds reports whether process pid has a descriptor whose link reads
// target. A process that has gone is not an error; one whose descriptors
// may not be read is. It uses the system calls directly, as it runs once
// per candidate on the broadcaster's accepting goroutine: one open, the
// directory read, one readlinkat per descriptor.
func holds(pid int, target, buf []byte) (bool, error) {
	dirfd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("read the descriptors of process %d: %w", pid, err)
	}
	defer unix.Close(dirfd)
	var dents [4096]byte
	var names []string
	for {
		n, err := unix.Getdents(dirfd, dents[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			break // the end, or the process exited while being read
		}
		_, _, names = unix.ParseDirent(dents[:n], -1, names[:0])
		for _, name := range names {
			k, err := unix.Readlinkat(dirfd, name, buf)
			if err == nil && k == len(target) && bytes.Equal(buf[:k], target) {
				return true, nil
			}
		}
	}
	return false, nil
}

// children returns the child processes of pid, from the children file of
// each of its threads (a child belongs to the thread that forked it).
// Without /proc/PID/task/TID/children (a kernel without
// CONFIG_PROC_CHILDREN) it returns none.
func children(pid int) []int {
	task := "/proc/" + strconv.Itoa(pid) + "/task/"
	f, err := os.Open(task)
	if err != nil {
		return nil
	}
	tids, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil
	}
	var out []int
	for _, tid := range tids {
		b, err := os.ReadFile(task + tid + "/children")
		if err != nil {
			continue
		}
		out = append(out, parsePIDs(b)...)
	}
	return out
}

// parsePIDs parses a children file: decimal pids separated by spaces.
// Anything else is skipped.
func parsePIDs(b []byte) []int {
	var out []int
	for _, f := range bytes.Fields(b) {
		if n, err := strconv.Atoi(string(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}
