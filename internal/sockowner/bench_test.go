package sockowner

import (
	"os/exec"
	"testing"
)

// BenchmarkFind measures one identification of a connection's owner
// among 8 candidate processes, the last of which holds it: the sock_diag
// lookup and the reading of every candidate's descriptors.
func BenchmarkFind(b *testing.B) {
	ln := listen(b, "127.0.0.1:0")
	exe := self(b)
	var pids []int
	for range 7 {
		pids = append(pids, startDialer(b, exec.Command(exe), ln.Addr().String()).Process.Pid)
		c, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
	}
	owner := startDialer(b, exec.Command(exe), ln.Addr().String())
	conn, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	pids = append(pids, owner.Process.Pid)
	b.ResetTimer()
	for b.Loop() {
		got, err := Find(conn, pids)
		if err != nil || got != owner.Process.Pid {
			b.Fatalf("Find = %d, %v", got, err)
		}
	}
}

// BenchmarkInode compares the sock_diag lookup with the /proc fallback.
func BenchmarkInode(b *testing.B) {
	ln := listen(b, "127.0.0.1:0")
	_, server := pair(b, ln, ln.Addr().String())
	tu, err := PeerTuple(server)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("sock_diag", func(b *testing.B) {
		for b.Loop() {
			if _, err := diagInode(tu); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proc", func(b *testing.B) {
		for b.Loop() {
			if _, err := procInode(tu); err != nil {
				b.Fatal(err)
			}
		}
	})
}
