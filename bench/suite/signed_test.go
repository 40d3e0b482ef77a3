package main

import (
	"slices"
	"strings"
	"testing"
)

func TestSignedPlanUsesFlags(t *testing.T) {
	for _, sc := range signedPlan(37, 250) {
		for _, run := range sc.runs {
			i := slices.Index(run.args, "-subs")
			if i < 0 || run.args[i+1] != "37" || !slices.Contains(run.args, "-ack") {
				t.Errorf("%s/%s: args %q lack -subs 37 -ack", sc.name, run.key, run.args)
			}
			if j := slices.Index(run.args, "-rate"); (sc.name == "signed-latency") != (j >= 0 && run.args[j+1] == "250") {
				t.Errorf("%s/%s: args %q: only the latency runs have -rate 250", sc.name, run.key, run.args)
			}
		}
	}
}

func TestSignedVerdicts(t *testing.T) {
	plan := signedPlan(100, 1000)
	tests := []struct {
		name    string
		results map[string]*result
		want    []string // in order, one per verdict
	}{
		{"all met", map[string]*result{
			"signed-per-message/cache": {Subs: 100, DeliverRate: 2.6e6},
			"signed-chained/cache":     {Subs: 100, DeliverRate: 1.2e6},
			"signed-latency/text":      {P99us: 4000},
			"signed-latency/chained":   {P99us: 13000},
		}, []string{"26.0 k messages/s", "**met**", "1.20 M verified", "**met**", "+9.00 ms", "**met**"}},
		{"all missed", map[string]*result{
			"signed-per-message/cache": {Subs: 100, DeliverRate: 1.0e6},
			"signed-chained/cache":     {Subs: 100, DeliverRate: 2.0e6, Errors: []string{"lost lines"}},
			"signed-latency/text":      {P99us: 4000},
			"signed-latency/chained":   {P99us: 14500},
		}, []string{"10.0 k messages/s", "**missed**", "2.00 M verified", "**missed**", "+10.50 ms", "**missed**"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(verdicts(plan, tc.results), "\n")
			at := 0
			for _, w := range tc.want {
				i := strings.Index(got[at:], w)
				if i < 0 {
					t.Fatalf("verdicts lack %q after byte %d:\n%s", w, at, got)
				}
				at += i + len(w)
			}
		})
	}
}
