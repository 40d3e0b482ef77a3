package main

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseStamp(t *testing.T) {
	tests := []struct {
		name  string
		line  string
		seq   uint64
		nanos int64
		ok    bool
	}{
		{"stamped", "42 123456789 xxxx", 42, 123456789, true},
		{"no padding", "7 99 ", 7, 99, true},
		{"seq zero", "0 1 x", 0, 0, false},
		{"probe", "PROBE 3", 0, 0, false},
		{"keep-alive ack", "KEEP_ALIVE_ACK", 0, 0, false},
		{"digits only", "12345", 0, 0, false},
		{"empty", "", 0, 0, false},
		{"seq too long", "12345678901234567890 1 x", 0, 0, false},
		{"max seq", "1844674407370955161 5 x", 1844674407370955161, 5, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq, rest, ok := parseSeq([]byte(tc.line))
			if ok != tc.ok || seq != tc.seq {
				t.Fatalf("parseSeq(%q) = %d, %v; want %d, %v", tc.line, seq, ok, tc.seq, tc.ok)
			}
			if !ok {
				return
			}
			nanos, ok := parseNanos(rest)
			if !ok || nanos != tc.nanos {
				t.Fatalf("parseNanos(%q) = %d, %v; want %d", rest, nanos, ok, tc.nanos)
			}
		})
	}
}

func TestAppendLineSizeAndRoundTrip(t *testing.T) {
	for _, size := range []int{minLineSize, 64, 1000, maxLineSize} {
		for _, seq := range []uint64{1, 99999, math.MaxUint64 / 10} {
			b := appendLine(nil, seq, 1234567890123456789, size)
			if len(b) != size+1 || b[size] != '\n' {
				t.Fatalf("size %d seq %d: line is %d bytes, want %d plus \\n", size, seq, len(b), size)
			}
			gotSeq, rest, ok := parseSeq(b[:size])
			if !ok || gotSeq != seq {
				t.Fatalf("size %d: parsed seq %d, %v; want %d", size, gotSeq, ok, seq)
			}
			if n, ok := parseNanos(rest); !ok || n != 1234567890123456789 {
				t.Fatalf("size %d: parsed nanos %d, %v", size, n, ok)
			}
		}
	}
}

// feed gives a fresh tracker the seqs in order and returns it.
func feed(seqs ...uint64) tracker {
	tr := newTracker()
	for _, s := range seqs {
		tr.observe(s)
	}
	return tr
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name                            string
		seqs                            []uint64
		last                            uint64
		received, lost, reordered, dups uint64
	}{
		{"in order", []uint64{1, 2, 3, 4}, 4, 4, 0, 0, 0},
		{"gap", []uint64{1, 2, 5, 6}, 6, 4, 2, 0, 0},
		{"tail missing", []uint64{1, 2}, 5, 2, 3, 0, 0},
		{"first missing", []uint64{2, 3}, 3, 2, 1, 0, 0},
		{"duplicate", []uint64{1, 2, 2, 3}, 3, 3, 0, 0, 1},
		{"duplicate of old line", []uint64{1, 2, 3, 1}, 3, 3, 0, 0, 1},
		{"reordered pair", []uint64{1, 3, 2, 4}, 4, 4, 0, 1, 0},
		{"late line fills middle of gap", []uint64{1, 6, 3}, 6, 3, 3, 1, 0},
		{"late lines fill whole gap", []uint64{1, 5, 4, 2, 3}, 5, 5, 0, 3, 0},
		{"late line then duplicate", []uint64{1, 3, 2, 2}, 3, 3, 0, 1, 1},
		{"two gaps", []uint64{2, 4, 6, 1, 5}, 6, 5, 1, 2, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := feed(tc.seqs...)
			if got := tr.lostBy(tc.last); got != tc.lost {
				t.Errorf("lost = %d, want %d", got, tc.lost)
			}
			if tr.received != tc.received || tr.reordered != tc.reordered || tr.duplicated != tc.dups {
				t.Errorf("received %d reordered %d duplicated %d; want %d %d %d",
					tr.received, tr.reordered, tr.duplicated, tc.received, tc.reordered, tc.dups)
			}
		})
	}
}

func TestTrackerGapLimit(t *testing.T) {
	tr := newTracker()
	for i := range uint64(maxGaps + 10) {
		tr.observe(2*i + 2) // every odd seq missing
	}
	if len(tr.gaps) != maxGaps {
		t.Fatalf("remembers %d gaps, want the bound %d", len(tr.gaps), maxGaps)
	}
	if want := uint64(maxGaps + 10); tr.lost != want {
		t.Fatalf("lost = %d, want %d", tr.lost, want)
	}
	tr.observe(1) // forgotten gap: counted as a duplicate, still lost
	if tr.duplicated != 1 || tr.lost != maxGaps+10 {
		t.Fatalf("after a forgotten seq: duplicated %d lost %d", tr.duplicated, tr.lost)
	}
}

func noWindow() (uint64, uint64) { return 1, math.MaxUint64 }

func TestStreamSplitReadsAndAcks(t *testing.T) {
	var all []byte
	all = appendProbe(all, 1)
	for seq := uint64(1); seq <= 20; seq++ {
		all = appendLine(all, seq, 1000, 64)
	}
	all = append(all, "KEEP_ALIVE_ACK\n"...)
	// Every split point: the stream must see the same lines whatever the reads.
	for split := range len(all) + 1 {
		s := stream{tracker: newTracker(), ack: true, sampleMod: 5, hist: new(histogram)}
		var acks bytes.Buffer
		buf := make([]byte, 0, len(all))
		for _, part := range [][]byte{all[:split], all[split:]} {
			buf = append(buf, part...)
			used := s.consume(buf, noWindow, func() int64 { return 1500 })
			buf = append(buf[:0], buf[used:]...)
			acks.Write(s.acks)
		}
		if len(buf) != 0 || s.received != 20 || s.lostBy(20) != 0 || !s.sawProbe || s.other != 2 {
			t.Fatalf("split %d: left %d bytes, received %d, lost %d, probe %v, other %d",
				split, len(buf), s.received, s.lostBy(20), s.sawProbe, s.other)
		}
		// The probe and 20 lines of 64 bytes are acked; the keep-alive ack is not.
		want := "ACK_RECEIVED 7\n" + strings.Repeat("ACK_RECEIVED 64\n", 20)
		if acks.String() != want {
			t.Fatalf("split %d: acks\n%q\nwant\n%q", split, acks.String(), want)
		}
		if s.hist.total != 4 || s.hist.quantile(0.5) != bucketValue(bucketOf(500)) {
			t.Fatalf("split %d: %d samples, p50 %d; want 4 samples of 500ns", split, s.hist.total, s.hist.quantile(0.5))
		}
	}
}

func TestStreamOneAckWritePerRead(t *testing.T) {
	s := stream{tracker: newTracker(), ack: true, sampleMod: 1, hist: new(histogram)}
	var buf []byte
	for seq := uint64(1); seq <= 3; seq++ {
		buf = appendLine(buf, seq, 0, 50)
	}
	buf = append(buf, "4 0 partial"...)
	used := s.consume(buf, func() (uint64, uint64) { return math.MaxUint64, math.MaxUint64 }, nil)
	if used != 3*51 {
		t.Fatalf("used %d bytes, want the 3 complete lines (%d)", used, 3*51)
	}
	if got, want := string(s.acks), strings.Repeat("ACK_RECEIVED 50\n", 3); got != want {
		t.Fatalf("acks %q, want %q", got, want)
	}
	if s.hist.total != 0 {
		t.Fatalf("sampled %d lines outside the window", s.hist.total)
	}
	s.consume(nil, noWindow, nil)
	if len(s.acks) != 0 {
		t.Fatalf("acks of the previous read kept: %q", s.acks)
	}
}

func TestHistogram(t *testing.T) {
	// Buckets are contiguous and each value's bucket holds it within 3%.
	prev := -1
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 123456789, math.MaxUint64} {
		b := bucketOf(v)
		if b < prev || b >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d after %d (of %d)", v, b, prev, histBuckets)
		}
		prev = b
		if mid := bucketValue(b); math.Abs(float64(mid)-float64(v)) > 0.03*float64(v)+0.5 {
			t.Fatalf("bucketValue(bucketOf(%d)) = %d", v, mid)
		}
	}
	for v := uint64(0); v < 5000; v++ {
		if bucketOf(v+1) != bucketOf(v) && bucketOf(v+1) != bucketOf(v)+1 {
			t.Fatalf("buckets jump between %d and %d", v, v+1)
		}
	}
	var h histogram
	for i := range 100 {
		h.record(uint64(i+1) * uint64(time.Microsecond))
	}
	for _, tc := range []struct{ q, want float64 }{{0.5, 50e3}, {0.99, 99e3}} {
		got := float64(h.quantile(tc.q))
		if math.Abs(got-tc.want) > 0.03*tc.want {
			t.Errorf("quantile(%v) = %v, want about %v", tc.q, got, tc.want)
		}
	}
}

func TestParseProc(t *testing.T) {
	status := "Name:\tchattyd\nVmPeak:\t  100 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1000 kB\n"
	if got := parseStatusKiB([]byte(status), "VmHWM:"); got != 12345 {
		t.Fatalf("VmHWM = %d, want 12345", got)
	}
	if got := parseStatusKiB([]byte(status), "VmSwap:"); got != -1 {
		t.Fatalf("missing key = %d, want -1", got)
	}
}

func ExampleappendLine() {
	fmt.Printf("%q\n", appendLine(nil, 1, 42, minLineSize))
	// Output: "1 42 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
}

func BenchmarkConsume(b *testing.B) {
	var buf []byte
	for seq := uint64(1); len(buf) < 200<<10; seq++ {
		buf = appendLine(buf, seq, 1000, 64)
	}
	lines := bytes.Count(buf, []byte{'\n'})
	s := stream{tracker: newTracker(), sampleMod: 64, hist: new(histogram)}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		s.tracker = newTracker()
		s.consume(buf, noWindow, func() int64 { return 2000 })
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*lines), "ns/line")
}
