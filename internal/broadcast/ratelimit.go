package broadcast

import "time"

// tokenBucket limits a client's signed messages: rate per second on
// average, burst at once. It is used by the client's reader only.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

// newTokenBucket returns a full bucket, or nil (no limit) for a rate of 0.
func newTokenBucket(rate float64, burst int) *tokenBucket {
	if rate <= 0 {
		return nil
	}
	b := float64(max(burst, 1))
	return &tokenBucket{rate: rate, burst: b, tokens: b}
}

// allow takes a token if there is one at time now.
func (b *tokenBucket) allow(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// burstSize is the burst as a count.
func (b *tokenBucket) burstSize() int { return int(b.burst) }
