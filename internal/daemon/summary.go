package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
)

// runSummary logs one line of counters every interval (log.summary_interval)
// until ctx is done: enough to follow a running daemon at info level.
func (d *Daemon) runSummary(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	prev := backend{d}.Status()
	prevAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			st := backend{d}.Status()
			d.log.Info(summaryLine(prev, st, now.Sub(prevAt)))
			prev, prevAt = st, now
		}
	}
}

// summaryLine says what changed between two statuses taken elapsed apart.
func summaryLine(prev, cur control.Status, elapsed time.Duration) string {
	rate := 0.0
	if elapsed > 0 {
		rate = float64(cur.Feed.Lines-prev.Feed.Lines) / elapsed.Seconds()
	}
	return fmt.Sprintf("Summary: %d lines in (%.1f/s), %s, workers %d/%d running, %s, %s, %s",
		cur.Feed.Lines, rate,
		plural(cur.Clients.Connected, "client", "clients"),
		cur.Pool.Running, cur.Pool.Desired,
		plural(int(cur.Pool.Restarts), "restart", "restarts"),
		plural(int(cur.Clients.SlowConsumers), "slow consumer", "slow consumers"),
		plural(int(cur.Clients.AcksMismatched), "mismatched ack", "mismatched acks"))
}
