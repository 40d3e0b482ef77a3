// Package demofeed generates the demo feed of the original chatty's
// generate-data.sh: lines of the form
//
//	2024-07-06 02:19:04 WPEEo9bG5nnnS/tkKyiJMDf3LJJ3fiPE
//
// a local timestamp and the standard Base64 of 1 to 32 random bytes, at a
// steady rate.
package demofeed

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// Options says how fast and how much to generate.
type Options struct {
	// Rate is the number of lines per second; 0 means as fast as possible.
	Rate float64
	// Count is the number of lines to write; 0 means no end.
	Count int
}

// maxBatch bounds the lines written at once when behind schedule.
const maxBatch = 4096

// AppendLine appends one feed line for time now, with its "\n", to dst.
func AppendLine(dst []byte, now time.Time, rng *rand.Rand) []byte {
	var raw [32]byte
	n := 1 + rng.IntN(len(raw))
	for i := range n {
		raw[i] = byte(rng.Uint32())
	}
	dst = now.AppendFormat(dst, "2006-01-02 15:04:05 ")
	dst = base64.StdEncoding.AppendEncode(dst, raw[:n])
	return append(dst, '\n')
}

// Run writes lines to w at o.Rate until o.Count lines are written, ctx is
// done (both return nil) or a write fails (the error wraps the writer's).
// Lines due at the same moment are written together.
func Run(ctx context.Context, w io.Writer, o Options) error {
	if o.Rate < 0 || o.Count < 0 {
		return fmt.Errorf("demo feed: rate (%g) and count (%d) must not be negative", o.Rate, o.Count)
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	bw := bufio.NewWriterSize(w, 64<<10)
	var buf []byte
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for written := 0; o.Count == 0 || written < o.Count; {
		now := time.Now()
		due := written + maxBatch
		if o.Rate > 0 {
			due = int(now.Sub(start).Seconds()*o.Rate) + 1
		}
		if o.Count > 0 {
			due = min(due, o.Count)
		}
		due = min(due, written+maxBatch)
		if due <= written {
			next := start.Add(time.Duration(float64(written) / o.Rate * float64(time.Second)))
			timer.Reset(next.Sub(now))
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		buf = buf[:0]
		for ; written < due; written++ {
			buf = AppendLine(buf, now, rng)
		}
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("write demo feed: %w", err)
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write demo feed: %w", err)
		}
	}
	return nil
}
