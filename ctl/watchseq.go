package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chatty-dev/chatty/pkg/wire"
)

// resume is where watch asks the sequenced listener to start, and the
// state file it keeps, from --from, --since and --state.
type resume struct {
	set   bool // one of the flags was given
	start wire.StartRequest
	state string // the state file; "" for none
}

// resumeOptions reads watch's --from, --since and --state. A state file
// that holds a position wins over neither flag: --from and --since say
// where to start this time, and the state is kept from there.
func resumeOptions(c *cli.Context) (resume, error) {
	r := resume{start: wire.StartRequest{Stream: wire.AnyStream, From: wire.FromNext}, state: c.String("state")}
	from, since := c.String("from"), c.Duration("since")
	r.set = from != "" || c.IsSet("since") || r.state != ""
	switch {
	case from != "" && c.IsSet("since"):
		return r, usagef("watch: give --from or --since, not both")
	case from == "first":
		r.start.From = wire.FromFirst
	case from == "next":
		r.start.From = wire.FromNext
	case from != "":
		n, err := strconv.ParseUint(from, 10, 64)
		if err != nil || n == 0 {
			return r, usagef("watch: --from wants a sequence number (from 1), first or next, got %q", from)
		}
		r.start.From, r.start.Seq = wire.FromSeq, n
	case c.IsSet("since"):
		if since <= 0 {
			return r, usagef("watch: --since wants a positive duration such as 5m, got %s", since)
		}
		r.start.From, r.start.Since = wire.FromSince, time.Now().Add(-since)
	case r.state != "":
		pos, ok, err := readWatchState(r.state)
		if err != nil {
			return r, err
		}
		if ok {
			r.start = wire.StartRequest{Stream: pos.stream, From: wire.FromSeq, Seq: pos.seq + 1}
		}
	}
	return r, nil
}

// watchPos is the last line watch printed: its stream and number.
type watchPos struct {
	stream string
	seq    uint64
}

// readWatchState reads a state file: "<stream> <seq>\n". A missing file
// is no position yet.
func readWatchState(path string) (watchPos, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return watchPos{}, false, nil
	}
	if err != nil {
		return watchPos{}, false, fmt.Errorf("watch: read the state file: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 || !wire.ValidStream(f[0]) {
		return watchPos{}, false, fmt.Errorf("watch: state file %s does not hold \"<stream> <seq>\"; remove it to start afresh", path)
	}
	seq, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return watchPos{}, false, fmt.Errorf("watch: state file %s: %q is no sequence number; remove it to start afresh", path, f[1])
	}
	return watchPos{f[0], seq}, true, nil
}

// writeWatchState replaces the state file at once (a new file renamed
// over it), so that it never holds half a position.
func writeWatchState(path string, pos watchPos) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write the state file: %w", err)
	}
	_, err = fmt.Fprintf(f, "%s %d\n", pos.stream, pos.seq)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write the state file: %w", err)
	}
	return nil
}

// watchSequenced reads the sequenced listener from where r asks and
// prints every line's text, one per line; gaps and a changed stream are
// told on errOut. With a state file, the last line printed is recorded
// after every read, once what was read is written out: a watch that is
// stopped (or killed) and started again with the same file continues
// after it (a killed one may print the last read's lines again).
func watchSequenced(ctx context.Context, conn net.Conn, addr string, r resume, keepAlive time.Duration, out, errOut io.Writer) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := conn.Write(wire.AppendStart(nil, r.start)); err != nil {
		return fmt.Errorf("watch %s: send START: %w", addr, err)
	}
	// From here on only the keep-alives write to the connection.
	if keepAlive > 0 {
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(keepAlive)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					if _, err := conn.Write(keepAliveLine); err != nil {
						return
					}
				}
			}
		})
		defer func() {
			close(done)
			conn.SetWriteDeadline(time.Unix(1, 0))
			wg.Wait()
		}()
	}
	w := bufio.NewWriterSize(out, 64<<10)
	br := bufio.NewReaderSize(conn, 64<<10)
	var pos watchPos
	var recorded uint64
	flush := func() error {
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if r.state != "" && pos.seq != recorded && pos.stream != "" {
			if err := writeWatchState(r.state, pos); err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			recorded = pos.seq
		}
		return nil
	}
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("watch %s: a line longer than %d bytes", addr, br.Size())
		}
		if len(line) > 0 && err == nil {
			if perr := handleSeqServerLine(bytes.TrimSuffix(line, []byte("\n")), &pos, w, errOut, addr); perr != nil {
				flush()
				return perr
			}
			if br.Buffered() > 0 {
				continue
			}
		}
		if ferr := flush(); ferr != nil {
			return ferr
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, io.EOF):
			return errClosed(addr)
		default:
			return fmt.Errorf("watch %s: %w", addr, err)
		}
	}
}

// handleSeqServerLine acts on one line of the sequenced listener.
func handleSeqServerLine(line []byte, pos *watchPos, w io.Writer, errOut io.Writer, addr string) error {
	l := wire.ParseServerLine(line)
	switch l.Kind {
	case wire.FeedLine:
		if pos.stream == "" {
			return fmt.Errorf("%s sent line %d before naming its stream", addr, l.Seq)
		}
		if pos.seq != 0 && l.Seq <= pos.seq {
			return fmt.Errorf("%s sent line %d after line %d: out of order", addr, l.Seq, pos.seq)
		}
		pos.seq = l.Seq
		w.Write(l.Text)
		w.Write([]byte{'\n'})
	case wire.StreamLine:
		pos.stream = l.Stream
		if l.Seq > 0 {
			pos.seq = l.Seq - 1
		}
	case wire.GapLine:
		fmt.Fprintf(errOut, "chattyctl: lines %d to %d are no longer retained by chattyd: %d lines missed\n", l.Seq, l.To, l.To-l.Seq+1)
	case wire.ChangedLine:
		fmt.Fprintf(errOut, "chattyctl: chattyd's stream is %s, not %s (chattyd restarted): its numbers start again; printing its oldest retained line on\n", l.Stream, l.Asked)
	case wire.KeepAliveAckLine:
	case wire.ErrorLine:
		return fmt.Errorf("%s refused: %s", addr, l.Text)
	default:
		return fmt.Errorf("%s sent a line the sequenced protocol does not have: %q", addr, line[:min(len(line), 80)])
	}
	return nil
}
