package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// TestShortSoak is the soak of `make soak` cut to about 20 seconds for
// `make test`: 40 workers living 1 to 5 s, scaled between 20 and 40, 10
// subscribers, 500 lines/s. Its memory check is loose (50%): 12 s of
// load is too short for a steady heap; `make soak` holds it to 10%.
func TestShortSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak in -short mode")
	}
	bins := harness.BuildBinaries(t)
	var log bytes.Buffer
	cfg := Config{
		Chattyd: bins.Chattyd, Chattyctl: bins.Chattyctl,
		Duration: 12 * time.Second, Rate: 500,
		Workers: 40, MinWorkers: 20, LifetimeMin: time.Second, LifetimeMax: 5 * time.Second,
		Subscribers: 10,
		SendEvery:   time.Second, ScaleEvery: 3 * time.Second, SampleEvery: time.Second,
		WarmUp: 4 * time.Second, MaxRSSGrowth: 0.5, RetainBytes: 1 << 20,
		Dir:  t.TempDir(),
		Logf: func(f string, a ...any) { t.Logf(f, a...) },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep.Print(&log, cfg)
	t.Log("\n" + log.String())
	if rep.LinesFed < 5000 {
		t.Errorf("fed only %d lines", rep.LinesFed)
	}
	for _, p := range rep.Problems {
		t.Error(p)
	}
}
