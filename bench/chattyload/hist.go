package main

import "math/bits"

// histogram counts durations in nanoseconds in log-linear buckets: exact
// below 64, then 32 buckets per power of two (at most 3% wide). Recording
// is an index computation and an increment: no allocation, no lock. Each
// subscriber owns one; they are merged once at the end.
type histogram struct {
	counts [histBuckets]uint32
	total  uint64
}

const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histBuckets = (64 - histSubBits + 1) * histSub // bucketOf(MaxUint64) is the last
)

// bucketOf returns the bucket of v.
func bucketOf(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1 // v>>shift is in [histSub, 2*histSub)
	return shift*histSub + int(v>>shift)
}

// bucketValue returns the middle of bucket i's range.
func bucketValue(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	lo := uint64(i%histSub+histSub) << shift
	return lo + (uint64(1)<<shift)/2
}

func (h *histogram) record(v uint64) {
	h.counts[bucketOf(v)]++
	h.total++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
}

// quantile returns the value at quantile q in [0, 1], 0 when empty.
func (h *histogram) quantile(q float64) uint64 {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			return bucketValue(i)
		}
	}
	return bucketValue(histBuckets - 1)
}
