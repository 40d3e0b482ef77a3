package demofeed

import (
	"context"
	"time"
)

// WaitClients asks connected, every poll, how many clients chattyd has,
// until it answers at least n or timeout passes; an error (chattyd not
// answering yet) counts as none and is asked again. It returns whether n
// were reached, the last count, and the last error. It returns early,
// not reached, when ctx is done.
func WaitClients(ctx context.Context, connected func(context.Context) (int, error), n int, timeout, poll time.Duration) (bool, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(poll)
	defer t.Stop()
	var (
		last    int
		lastErr error
	)
	for {
		got, err := connected(ctx)
		if err == nil {
			last, lastErr = got, nil
			if got >= n {
				return true, got, nil
			}
		} else if ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return false, last, lastErr
		case <-t.C:
		}
	}
}
