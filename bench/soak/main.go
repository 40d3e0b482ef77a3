// Command soak runs chattyd under constant load and churn for a while and
// checks that nothing is lost, mismatched or leaked: a steady feed, a pool
// of short-lived workers scaled up and down through chattyctl, typed
// messages sent through chattyctl, and external subscribers that check
// the order of every line and acknowledge it. See docs/reliability.md.
//
//	go run ./bench/soak -bin bin/chattyd -ctl bin/chattyctl -duration 10m
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	cfg := Config{Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "soak: "+f+"\n", a...) }}
	flag.StringVar(&cfg.Chattyd, "bin", "bin/chattyd", "chattyd binary")
	flag.StringVar(&cfg.Chattyctl, "ctl", "bin/chattyctl", "chattyctl binary")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Minute, "length of the loaded phase")
	flag.IntVar(&cfg.Rate, "rate", 2000, "feed lines per second")
	flag.IntVar(&cfg.Workers, "workers", 200, "workers at the start, and the most scale asks for")
	flag.IntVar(&cfg.MinWorkers, "min-workers", 100, "the fewest workers scale asks for")
	flag.DurationVar(&cfg.LifetimeMin, "lifetime-min", time.Second, "shortest worker lifetime")
	flag.DurationVar(&cfg.LifetimeMax, "lifetime-max", 5*time.Second, "longest worker lifetime")
	flag.IntVar(&cfg.Subscribers, "subs", 50, "external subscribers acknowledging every line")
	flag.DurationVar(&cfg.SendEvery, "send-every", 2*time.Second, "how often to run chattyctl send")
	flag.DurationVar(&cfg.ScaleEvery, "scale-every", 15*time.Second, "how often to run chattyctl scale")
	flag.DurationVar(&cfg.SampleEvery, "sample-every", 5*time.Second, "how often to measure chattyd")
	flag.DurationVar(&cfg.WarmUp, "warm-up", 2*time.Minute, "time before the memory baseline")
	flag.Float64Var(&cfg.MaxRSSGrowth, "max-rss-growth", 0.10, "allowed growth of resident memory after warm-up")
	flag.Int64Var(&cfg.RetainBytes, "retain-bytes", 8<<20, "broadcast.retain.bytes; the warm-up must fill it")
	flag.StringVar(&cfg.Dir, "dir", "", "directory for chattyd's config, socket and log (kept); a temporary one if empty")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	rep.Print(os.Stdout, cfg)
	if !rep.OK() {
		os.Exit(1)
	}
}
