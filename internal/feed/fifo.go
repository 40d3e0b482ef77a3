package feed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// The states a FIFO reports while it runs.
const (
	StateReading = "reading"
	StateWaiting = "waiting"
)

// A Reporter is a Source that reports a state of its own while it runs.
type Reporter interface {
	// State reports the source's state (StateReading or StateWaiting)
	// and, when it waits, a sentence saying what for.
	State() (state, detail string)
}

// checkInterval is how often a FIFO compares its path with the FIFO it
// reads, and how often it looks for a missing path.
const checkInterval = time.Second

// FIFO is a Source reading a named FIFO that writers open, write and close
// in turn. When the last writer closes it, a stream of bytes ends: a final
// line without newline is delivered as a line, as at the end of stdin, and
// is never joined to what the next writer writes. Writers that have the
// FIFO open at the same time are one stream.
//
// The FIFO read is the one the path names: the path is opened again at the
// end of each stream and compared with the open FIFO every checkInterval,
// so that a FIFO removed or replaced while chattyd runs is noticed; then
// the FIFO reads the one the path names, or waits for the path to name
// one. A FIFO that Run created at start is created again when it is
// missing; one that was there before is left to whoever made it.
type FIFO struct {
	path     string
	max      int
	log      *logrus.Entry
	interval time.Duration
	dropped  atomic.Uint64
	ended    atomic.Uint64 // streams ended: all writers gone, or the FIFO left

	mu     sync.Mutex // guards state and detail
	state  string
	detail string
}

// NewFIFO returns a Source reading the named FIFO, created (mode 0620) if
// missing.
func NewFIFO(path string, maxLine int, log *logrus.Entry) *FIFO {
	return &FIFO{path: path, max: maxLine, log: log, interval: checkInterval, state: StateReading}
}

// Name implements Source.
func (s *FIFO) Name() string { return "fifo " + s.path }

// Dropped implements Source.
func (s *FIFO) Dropped() uint64 { return s.dropped.Load() }

// State implements Reporter.
func (s *FIFO) State() (state, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.detail
}

func (s *FIFO) setState(state, detail string) {
	s.mu.Lock()
	s.state, s.detail = state, detail
	s.mu.Unlock()
}

// Run implements Source. It ends only when ctx is done or a read fails;
// a FIFO has no end of feed.
func (s *FIFO) Run(ctx context.Context, h Handler) error {
	created, err := makeFIFO(s.path)
	if err != nil {
		return err
	}
	f, id, err := openFIFO(s.path)
	if err != nil {
		return err
	}
	fr := &fifoReader{path: s.path, interval: s.interval, log: s.log}
	fr.swap(f, id)
	defer fr.close()

	// Interrupt a blocked read when ctx is done.
	defer interruptWhenDone(ctx, fr.stop)()

	lr := NewLineReader(fr, s.max)
	lr.OnDrop = dropCounter(&s.dropped, s.max, s.log)
	for {
		// Run returns at the end of one stream of writers, having ended
		// its last line.
		err := lr.Run(h)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", s.Name(), err)
		}
		s.ended.Add(1)
		if err := s.follow(ctx, fr, created); err != nil {
			return err
		}
	}
}

// follow makes sure fr reads the FIFO the path names, once a stream has
// ended. Usually fr has opened it already, at the stream's end; when the
// path was missing, or named something else, follow waits for it.
func (s *FIFO) follow(ctx context.Context, fr *fifoReader, created bool) error {
	if fr.reading() {
		s.setState(StateReading, "")
		return nil
	}
	waiting := ""
	for {
		f, id, err := openFIFO(s.path)
		if errors.Is(err, fs.ErrNotExist) && created {
			if _, err = makeFIFO(s.path); err == nil {
				s.log.WithField("path", s.path).Warn("The feed FIFO was removed; created it again")
				f, id, err = openFIFO(s.path)
			}
		}
		if err == nil {
			old := fr.swap(f, id)
			switch {
			case waiting != "":
				s.log.WithField("path", s.path).Info("The feed FIFO is back; reading it")
			case id != old:
				s.log.WithField("path", s.path).Warn("The feed FIFO path now names another FIFO; reading that one")
			}
			s.setState(StateReading, "")
			return nil
		}
		detail := fmt.Sprintf("waiting for the FIFO path %s to exist again", s.path)
		if !errors.Is(err, fs.ErrNotExist) {
			detail = fmt.Sprintf("waiting for %s to be a FIFO chattyd can open: %v", s.path, err)
		}
		if detail != waiting {
			if errors.Is(err, fs.ErrNotExist) {
				s.log.WithField("path", s.path).Warn("The feed FIFO path does not exist; waiting for it to exist again")
			} else {
				s.log.WithField("path", s.path).WithError(err).Error("Cannot open the feed FIFO; waiting for a FIFO there")
			}
			s.setState(StateWaiting, detail)
			waiting = detail
		}
		t := time.NewTimer(s.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// fileID identifies an open file's inode.
type fileID struct{ dev, ino uint64 }

// makeFIFO creates the FIFO at path if it is missing and reports whether
// it did.
func makeFIFO(path string) (created bool, err error) {
	err = unix.Mkfifo(path, 0o620)
	if err == nil {
		// Mkfifo honours the umask; make the mode what we promised.
		if err := os.Chmod(path, 0o620); err != nil {
			return true, fmt.Errorf("feed fifo %s: %w", path, err)
		}
		return true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("create feed fifo %s: %w", path, err)
	}
	return false, nil
}

// openFIFO opens the FIFO at path for reading, without waiting for a
// writer, and identifies it.
func openFIFO(path string) (*os.File, fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fileID{}, fmt.Errorf("feed fifo %s: %w", path, err)
	}
	if st.Mode()&fs.ModeNamedPipe == 0 {
		return nil, fileID{}, fmt.Errorf("feed fifo %s exists but is not a FIFO (%s); remove it or choose another feed.path", path, st.Mode().Type())
	}
	// O_NONBLOCK: opening for reading does not wait for a writer. The
	// Go runtime's poller then waits for data.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fileID{}, fmt.Errorf("open feed fifo %s: %w", path, err)
	}
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		f.Close()
		return nil, fileID{}, fmt.Errorf("feed fifo %s: %w", path, err)
	}
	if fst.Mode&unix.S_IFMT != unix.S_IFIFO {
		f.Close()
		return nil, fileID{}, fmt.Errorf("feed fifo %s was replaced by something else as it was opened; remove it or choose another feed.path", path)
	}
	return f, fileID{uint64(fst.Dev), fst.Ino}, nil
}

// pathID identifies the inode that path names.
func pathID(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, err
	}
	return fileID{uint64(st.Dev), st.Ino}, nil
}

// fifoReader reads one open FIFO after another. Its Read returns io.EOF
// at the end of a stream: when the FIFO's last writer has closed it, and
// when the path no longer names it (after reading what it holds). At the
// end of a stream it has opened the FIFO the path names, if any, for the
// next one.
//
// The FIFO is opened for reading only, and without waiting for a writer:
// then a FIFO whose writers have all gone reads as end of file, but so
// does one that no writer has opened yet. poll(2) tells them apart: on
// Linux it reports POLLHUP only once a writer has opened the FIFO since it
// was opened for reading (or was open then), and has gone. Each stream
// therefore needs an open file of its own; the next one is opened before
// the end of the current one is read, so that a writer that comes and goes
// in between still ends a stream of its own, and the FIFO is never without
// a reader (a writer would get EPIPE).
type fifoReader struct {
	path     string
	interval time.Duration
	log      *logrus.Entry

	mu       sync.Mutex // guards the fields below
	f        *os.File   // nil: none, the path named no FIFO
	fid      fileID     // f's, or the last one's
	stopping bool       // ctx is done: reads fail at once
	checked  time.Time  // when the path was last compared with f
	leaving  bool       // the path names another file: read what is left, then end
}

// swap makes f (nil: none) the FIFO to read, closes the previous one and
// returns its identity.
func (r *fifoReader) swap(f *os.File, id fileID) fileID {
	r.mu.Lock()
	old, oldID := r.f, r.fid
	r.f = f
	if f != nil {
		r.fid = id
	}
	r.checked = time.Now()
	r.leaving = false
	if f != nil && r.stopping {
		f.SetReadDeadline(time.Now())
	}
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return oldID
}

// reading reports whether r has a FIFO to read.
func (r *fifoReader) reading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f != nil
}

// stop makes every read fail from now on.
func (r *fifoReader) stop() {
	r.mu.Lock()
	r.stopping = true
	if r.f != nil {
		r.f.SetReadDeadline(time.Now())
	}
	r.mu.Unlock()
}

func (r *fifoReader) close() { r.swap(nil, fileID{}) }

// errStopped is what reads return once stop was called.
var errStopped = errors.New("feed stopped")

// Read implements io.Reader.
func (r *fifoReader) Read(p []byte) (int, error) {
	for {
		f, leaving, err := r.prepare()
		if err != nil {
			return 0, err
		}
		n, hup, err := readFIFO(f, p, leaving)
		if n > 0 {
			return n, nil
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, err
		}
		if hup && leaving {
			r.swap(nil, fileID{})
			return 0, io.EOF
		}
		if hup {
			// The writers have gone, the FIFO is empty. Open the next
			// stream's file first, then make sure no writer came since.
			next, id, openErr := openFIFO(r.path)
			n, err := readNow(f, p)
			if n > 0 || err != nil {
				if next != nil {
					next.Close()
				}
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, os.ErrDeadlineExceeded) {
					continue // a writer came, or time to check the path or stop
				}
				return n, err
			}
			if openErr != nil {
				next = nil // the path names no FIFO: follow waits for one
			}
			if old := r.swap(next, id); next != nil && id != old {
				r.log.WithField("path", r.path).Warn("The feed FIFO path now names another FIFO; reading that one")
			}
			return 0, io.EOF
		}
		// The deadline: time to compare the path with the open FIFO
		// (prepare), or to stop.
	}
}

// prepare returns the FIFO to read and whether it is being left, after
// comparing the path with it if that is due, and sets the read deadline
// to the next comparison.
func (r *fifoReader) prepare() (*os.File, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return nil, false, errStopped
	}
	if r.f == nil {
		return nil, false, io.EOF
	}
	now := time.Now()
	if !r.leaving && now.Sub(r.checked) >= r.interval {
		r.checked = now
		if id, err := pathID(r.path); err != nil || id != r.fid {
			r.log.WithField("path", r.path).Warn("The feed FIFO was removed or replaced; ending the one being read")
			r.leaving = true
		}
	}
	r.f.SetReadDeadline(r.checked.Add(r.interval))
	return r.f, r.leaving, nil
}

// readFIFO reads what f holds into p, waiting until the read deadline for
// data. It reports hup, reading nothing, when the FIFO is empty and its
// writers have gone (or, if leaving, when it is empty).
func readFIFO(f *os.File, p []byte, leaving bool) (n int, hup bool, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, rerr = unix.Poll(pfd, 0)
			if rerr != unix.EINTR {
				break
			}
		}
		switch {
		case rerr != nil:
			return true
		case pfd[0].Revents&unix.POLLIN == 0 && (leaving || pfd[0].Revents&unix.POLLHUP != 0):
			hup = true
			return true
		case pfd[0].Revents == 0:
			return false // nothing yet: wait on the poller
		}
		n, rerr = readFd(int(fd), p)
		switch {
		case rerr == unix.EAGAIN:
			rerr = nil
			return false // taken by another reader of the FIFO
		case rerr != nil:
			n = 0
		case n == 0:
			hup = true // emptied and left since poll
		}
		return true
	})
	if rerr != nil {
		return 0, false, rerr
	}
	return n, hup, err
}

// readNow reads what f holds without waiting: n is 0 and err nil at end of
// file, err is EAGAIN if a writer has f open but wrote nothing yet.
func readNow(f *os.File, p []byte) (n int, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = readFd(int(fd), p)
		return true
	}); err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	return n, nil
}

// readFd is read(2), retried on EINTR.
func readFd(fd int, p []byte) (int, error) {
	for {
		n, err := unix.Read(fd, p)
		if err != unix.EINTR {
			if n < 0 {
				n = 0
			}
			return n, err
		}
	}
}
