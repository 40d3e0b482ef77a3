package daemon

import (
	"context"
	"fmt"
	"sync"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/feed"
	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/sirupsen/logrus"
)

// newSource builds the feed: the test's source, else the FIFO systemd
// passed, else the source the configuration names.
func newSource(opts Options, cfg config.Config) feed.Source {
	if opts.Feed != nil {
		return opts.Feed
	}
	log := opts.Logger.WithField(logging.FieldComponent, "feed")
	max := cfg.Feed.MaxLineBytes
	switch {
	case opts.Activation.Feed != nil:
		return feed.NewFile("fifo (systemd)", opts.Activation.Feed, max, log.WithField(logging.FieldScope, "feed"))
	case cfg.Feed.Source == config.SourceFIFO:
		return feed.NewFIFO(cfg.Feed.Path, max, log.WithField(logging.FieldScope, "fifo"))
	default:
		return feed.NewStdin(max, log.WithField(logging.FieldScope, "stdin"))
	}
}

// runFeed reads the feed into the listeners. At end of feed it either
// keeps running (on_eof: keep, as the original did) or returns to stop the
// daemon (on_eof: stop).
func (d *Daemon) runFeed(ctx context.Context) error {
	log := d.opts.Logger.WithField(logging.FieldComponent, "feed").WithField(logging.FieldScope, d.source.Name())
	debug := func() bool { return d.opts.Logger.IsLevelEnabled(logrus.DebugLevel) }
	d.feedState.set(control.FeedReading)
	err := d.source.Run(ctx, feed.HandlerFunc(func(lines [][]byte) {
		n := 0
		for _, l := range lines {
			n += len(l) + 1
		}
		d.feedLines.Add(uint64(len(lines)))
		d.feedBytes.Add(uint64(n))
		if debug() {
			for _, l := range lines {
				log.Debugf("Received: %s", l)
			}
		}
		if d.shared != nil {
			d.shared.publish(ctx, lines)
			return
		}
		d.listeners.publish(lines)
	}))
	if ctx.Err() != nil {
		d.feedState.set(control.FeedStopped)
		return nil
	}
	if err != nil {
		d.feedState.set(control.FeedFailed)
		return fmt.Errorf("feed %s: %w", d.source.Name(), err)
	}
	d.feedState.set(control.FeedEOF)
	if d.config().Feed.OnEOF == config.OnEOFStop {
		log.Info("End of feed; stopping (feed.on_eof: stop)")
		return nil
	}
	if !d.stopping() {
		log.Info("End of feed; still serving clients (feed.on_eof: keep)")
	}
	<-ctx.Done()
	return nil
}

// feedStatus reports the feed's state (starting, reading, waiting, eof,
// stopped or failed) and, for a source that reports its own while it runs
// (a FIFO waiting for its path), what it waits for.
func (d *Daemon) feedStatus() (state, detail string) {
	state = d.feedState.get()
	if r, ok := d.source.(feed.Reporter); ok && state == control.FeedReading {
		return r.State()
	}
	return state, ""
}

// stateString is a string read and written from several goroutines.
type stateString struct {
	mu sync.Mutex // guards s
	s  string
}

func (s *stateString) set(v string) { s.mu.Lock(); s.s = v; s.mu.Unlock() }
func (s *stateString) get() string  { s.mu.Lock(); defer s.mu.Unlock(); return s.s }
