package main

import (
	"sync/atomic"
	"time"
)

// fullSpeedBatch is how many bytes of lines the feeder writes at once at
// full speed.
const fullSpeedBatch = 64 << 10

// feeder writes stamped lines to the server. run is its only goroutine;
// the other methods read its progress.
type feeder struct {
	w     feedWriter
	size  int
	rate  int // lines per second; 0 means as fast as the server takes them
	epoch time.Time
	fed   atomic.Uint64 // last seq fully written
	stop  atomic.Bool
	buf   []byte

	// At full speed the feeder stays at most window lines ahead of the
	// slowest subscriber, as reported by slowest. Without it the feed would
	// fill every socket buffer on the way (megabytes per subscriber), the
	// latency would measure buffer depth and draining would take minutes.
	window  uint64
	slowest func() uint64
}

func newFeeder(w feedWriter, size, rate int, epoch time.Time) *feeder {
	return &feeder{w: w, size: size, rate: rate, epoch: epoch, buf: make([]byte, 0, fullSpeedBatch+2*maxLineSize)}
}

// nanos is the feeder's clock, shared with the subscribers.
func (f *feeder) nanos() int64 { return int64(time.Since(f.epoch)) }

// probe writes one probe line.
func (f *feeder) probe(n int) error {
	f.buf = appendProbe(f.buf[:0], n)
	_, err := f.w.Write(f.buf)
	return err
}

// run feeds until stop is set or a write fails, and returns the write error.
func (f *feeder) run() error {
	if f.rate > 0 {
		return f.runRate()
	}
	seq := f.fed.Load()
	per := fullSpeedBatch / (f.size + 1)
	if per < 1 {
		per = 1
	}
	for !f.stop.Load() {
		if f.slowest != nil && seq-min(seq, f.slowest()) > f.window {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		now := f.nanos() // one stamp per batch
		b := f.buf[:0]
		for range per {
			seq++
			b = appendLine(b, seq, now, f.size)
		}
		if _, err := f.w.Write(b); err != nil {
			return err
		}
		f.fed.Store(seq)
	}
	return nil
}

// runRate feeds rate lines a second in small batches on a ticker, each
// line stamped when its batch is written.
func (f *feeder) runRate() error {
	tick := time.Second / time.Duration(f.rate)
	if tick < time.Millisecond {
		tick = time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	base := f.fed.Load()
	seq := base
	maxBurst := uint64(max(f.rate/10, 1)) // after a stall, catch up gently
	for !f.stop.Load() {
		<-t.C
		due := base + uint64(time.Since(start).Seconds()*float64(f.rate))
		if due <= seq {
			continue
		}
		if due-seq > maxBurst {
			due = seq + maxBurst
		}
		now := f.nanos()
		b := f.buf[:0]
		for seq < due {
			seq++
			b = appendLine(b, seq, now, f.size)
		}
		if _, err := f.w.Write(b); err != nil {
			return err
		}
		f.fed.Store(seq)
	}
	return nil
}
