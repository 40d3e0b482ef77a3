package signed

import (
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

// benchPayload is a line of the demo feed.
var benchPayload = []byte("2024-07-06 02:19:04 WPEEo9bG5nnnS/tkKyiJMDf3LJJ3fiPE")

func benchEncoder(b *testing.B, mode Mode) *Encoder {
	b.Helper()
	e, err := NewEncoder(testKey(), mode, EncoderOptions{CheckpointEvery: 1000, CheckpointInterval: 10 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// benchEncode encodes one message per iteration, with the real clock as
// the message time, so chained checkpoints come every 1000 messages or
// DefaultCheckpointInterval, whichever is first.
func benchEncode(b *testing.B, mode Mode) {
	e := benchEncoder(b, mode)
	dst := make([]byte, 0, 1<<20)
	b.SetBytes(int64(len(benchPayload)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if len(dst) > 1<<19 {
			dst = dst[:0]
		}
		dst, _, err = e.Append(dst, message.Info, time.Now(), benchPayload)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodePerMessage(b *testing.B) { benchEncode(b, PerMessage) }
func BenchmarkEncodeChained(b *testing.B)    { benchEncode(b, Chained) }

// BenchmarkEncodeChainedBatch is the chained mode with the message time
// read once per 100 messages, as a broadcaster appending a batch of feed
// lines does.
func BenchmarkEncodeChainedBatch(b *testing.B) {
	e := benchEncoder(b, Chained)
	dst := make([]byte, 0, 1<<20)
	b.SetBytes(int64(len(benchPayload)))
	b.ReportAllocs()
	var now time.Time
	i := 0
	for b.Loop() {
		if i%100 == 0 {
			now = time.Now()
			if len(dst) > 1<<19 {
				dst = dst[:0]
			}
		}
		i++
		dst, _, _ = e.Append(dst, message.Info, now, benchPayload)
	}
}

// benchVerify verifies, per iteration, a stream of n messages fed in
// 64 KiB reads, and reports messages per second.
func benchVerify(b *testing.B, mode Mode, n int) {
	e := benchEncoder(b, mode)
	stream, _, err := e.Anchor(nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for range n {
		stream, _, _ = e.Append(stream, message.Info, now, benchPayload)
	}
	stream = e.Checkpoint(stream)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	deliver := func(*Message) {}
	for b.Loop() {
		v, _ := NewVerifier(e.PublicKey(), VerifierOptions{})
		for off := 0; off < len(stream); off += 64 << 10 {
			if err := v.Feed(stream[off:min(off+64<<10, len(stream))], deliver); err != nil {
				b.Fatal(err)
			}
		}
		if err := v.Close(); err != nil {
			b.Fatal(err)
		}
		if got := v.Stats().Verified; got != uint64(n) {
			b.Fatalf("verified %d of %d", got, n)
		}
	}
	b.ReportMetric(float64(b.N)*float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkVerifyPerMessage(b *testing.B) { benchVerify(b, PerMessage, 1000) }
func BenchmarkVerifyChained(b *testing.B)    { benchVerify(b, Chained, 20000) }
func BenchmarkUpstreamVerify(b *testing.B) {
	c, u, _ := upstreamSetup(b)
	u.now = time.Now
	var frames []Frame
	for range 10000 {
		buf, _, _ := c.Append(nil, message.Info, time.Now(), benchPayload)
		frames = append(frames, decodeOne(b, buf, 0))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(frames) {
			b.StopTimer()
			c, u, _ = upstreamSetup(b)
			u.now = time.Now
			frames = frames[:0]
			for range 10000 {
				buf, _, _ := c.Append(nil, message.Info, time.Now(), benchPayload)
				frames = append(frames, decodeOne(b, buf, 0))
			}
			i = 0
			b.StartTimer()
		}
		if _, err := u.Verify(frames[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
