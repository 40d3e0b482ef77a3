package feed

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Source produces feed lines. Sources other than byte streams (a message
// bus subject, say) implement it directly.
type Source interface {
	// Name identifies the source in logs and status, for example "stdin".
	Name() string
	// Run delivers lines to h until the source ends (nil), fails, or ctx
	// is done (ctx.Err()).
	Run(ctx context.Context, h Handler) error
	// Dropped reports how many over-long lines were dropped so far.
	Dropped() uint64
}

// Stream is a Source reading one byte stream from a file descriptor: stdin,
// or a FIFO passed by systemd. At the end of the stream (for a FIFO systemd
// holds open, never) a final line without newline is delivered as a line.
type Stream struct {
	name    string
	open    func() (*os.File, error)
	max     int
	log     *logrus.Entry
	dropped atomic.Uint64
}

// NewStdin returns a Source reading standard input.
func NewStdin(maxLine int, log *logrus.Entry) *Stream {
	return &Stream{name: "stdin", max: maxLine, log: log, open: openStdin}
}

// NewFile returns a Source reading an already open file, such as a FIFO
// passed by systemd socket activation.
func NewFile(name string, f *os.File, maxLine int, log *logrus.Entry) *Stream {
	return &Stream{name: name, max: maxLine, log: log, open: func() (*os.File, error) { return f, nil }}
}

// Name implements Source.
func (s *Stream) Name() string { return s.name }

// Dropped implements Source.
func (s *Stream) Dropped() uint64 { return s.dropped.Load() }

// Run implements Source.
func (s *Stream) Run(ctx context.Context, h Handler) error {
	f, err := s.open()
	if err != nil {
		return err
	}
	defer f.Close()

	// Unblock the read when ctx is done. Pollable files honour the
	// deadline; for the others, closing is the only way.
	defer interruptWhenDone(ctx, func() {
		if f.SetReadDeadline(time.Now()) != nil {
			f.Close()
		}
	})()

	lr := NewLineReader(f, s.max)
	lr.OnDrop = dropCounter(&s.dropped, s.max, s.log)
	err = lr.Run(h)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", s.name, err)
	}
	return nil
}

// openStdin returns standard input, made pollable when it is a pipe, FIFO
// or socket so that a blocked read can be interrupted at shutdown.
func openStdin() (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(0, &st); err != nil {
		return nil, fmt.Errorf("stdin: %w", err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK:
		fd, err := unix.Dup(0)
		if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("stdin: %w", err)
		}
		return os.NewFile(uintptr(fd), "stdin"), nil
	case unix.S_IFCHR:
		// A terminal: a blocked read would ignore shutdown, and making
		// fd 0 non-blocking would change the shell's terminal too, as the
		// flag belongs to the open file, shared with it. Opening the
		// terminal again gives an open file of our own.
		if f, err := os.OpenFile("/proc/self/fd/0", os.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
			return f, nil
		}
	}
	return os.Stdin, nil
}

// dropCounter returns a LineReader.OnDrop that counts and logs each
// dropped line.
func dropCounter(dropped *atomic.Uint64, max int, log *logrus.Entry) func(n int) {
	return func(n int) {
		dropped.Add(1)
		log.WithField("bytes", n).WithField("max_line_bytes", max).
			Warn("Dropped an over-long line; reading continues at the next line")
	}
}
