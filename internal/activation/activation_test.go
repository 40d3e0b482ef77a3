package activation

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// passedFile returns a descriptor for l's socket, named as systemd would.
func passedFile(t *testing.T, l interface{ File() (*os.File, error) }, name string) *os.File {
	t.Helper()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(f.Fd(), name)
}

func tcpListener(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

func fifo(t *testing.T, name string) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "feed")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(f.Fd(), name)
}

func TestFromFiles(t *testing.T) {
	tcp := tcpListener(t)
	ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()

	p, err := fromFiles([]*os.File{
		passedFile(t, tcp, NameBroadcast),
		passedFile(t, ul.(*net.UnixListener), NameControl),
		fifo(t, NameFeed),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Broadcast == nil || p.Broadcast.Addr().String() != tcp.Addr().String() {
		t.Errorf("broadcast = %v, want %v", p.Broadcast, tcp.Addr())
	}
	if p.Control == nil || p.Control.Addr().Network() != "unix" {
		t.Errorf("control = %v", p.Control)
	}
	if p.Feed == nil {
		t.Fatal("no feed")
	}
	// The FIFO must stay pollable so that shutdown can interrupt a read.
	if err := p.Feed.SetReadDeadline(time.Now()); err != nil {
		t.Errorf("feed is not pollable: %v", err)
	}
	if _, err := p.Feed.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read from the empty feed = %v, want a deadline error", err)
	}
}

// TestFeedKeepsNonblocking: systemd clears O_NONBLOCK on its FIFO
// descriptor when it hands it to a producer as standard output
// (StandardOutput=fd:feed); chattyd's feed must stay interruptible anyway.
func TestFeedKeepsNonblocking(t *testing.T) {
	passed := fifo(t, NameFeed)
	// systemd's own descriptor: the same open file description.
	systemdFD, err := unix.FcntlInt(passed.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(systemdFD)
	p, err := fromFiles([]*os.File{passed})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := unix.SetNonblock(systemdFD, false); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		p.Feed.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := p.Feed.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read from the empty feed = %v, want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		// Unblock the stuck read so the test can end.
		unix.Write(systemdFD, []byte("x"))
		t.Fatal("the read blocked in the kernel: the feed shares O_NONBLOCK with systemd's descriptor")
	}
}

func TestFromFilesErrors(t *testing.T) {
	tests := []struct {
		name  string
		files func(t *testing.T) []*os.File
		want  string
	}{
		{"unknown name", func(t *testing.T) []*os.File {
			return []*os.File{passedFile(t, tcpListener(t), "LISTEN_FD_3")}
		}, `named "LISTEN_FD_3"`},
		{"broadcast twice", func(t *testing.T) []*os.File {
			return []*os.File{passedFile(t, tcpListener(t), NameBroadcast), passedFile(t, tcpListener(t), NameBroadcast)}
		}, "two descriptors"},
		{"control is tcp", func(t *testing.T) []*os.File {
			return []*os.File{passedFile(t, tcpListener(t), NameControl)}
		}, "want unix"},
		{"feed is a socket", func(t *testing.T) []*os.File {
			return []*os.File{passedFile(t, tcpListener(t), NameFeed)}
		}, "not a FIFO"},
		{"broadcast is a fifo", func(t *testing.T) []*os.File {
			return []*os.File{fifo(t, NameBroadcast)}
		}, "not a listening socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := fromFiles(tt.files(t))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if !p.Empty() {
				t.Error("a failed pick-up returned descriptors")
			}
		})
	}
}
