// Command chattyload measures a line broadcaster: it starts the server
// (chattyd, or ncat --broker or nats-server for comparison), connects N subscribers on
// 127.0.0.1, feeds stamped lines and reports deliveries per second, lines
// lost, latency and the server's CPU time per delivery.
//
//	chattyload -target chattyd -bin bin/chattyd -subs 100 -duration 5s
//	chattyload -target ncat -subs 100 -rate 1000 -json
//	chattyload -target nats -bin bin/nats-server -subs 100 -ack
//	chattyload -target chattyd-signed -bin bin/chattyd -mode per-message -subs 100 -ack
//
// With -target chattyd-signed the subscribers connect to chattyd's signed
// listener and count only the messages they verified (see signed.go).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := parseFlags(args)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintln(os.Stderr, "chattyload:", err)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	if cfg.cpuProfile != "" {
		stop, err := startCPUProfile(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "chattyload:", err)
			return 2
		}
		defer stop()
	}
	res, err := measure(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chattyload:", err)
		if res == nil { // still report, so that a harness sees the failure
			res = &result{Label: cfg.label, Target: cfg.target, Subs: cfg.subs, Size: cfg.size, Rate: cfg.rate, Ack: cfg.ack, PeakRSSKiB: -1}
		}
		res.Errors = append(res.Errors, err.Error())
	}
	fmt.Println(res.human())
	if cfg.json {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}
	if len(res.Errors) > 0 {
		return 1
	}
	return 0
}

// config holds the flags.
type config struct {
	target     string
	bin        string
	srvConfig  string
	extraArgs  []string
	label      string
	subs       int
	size       int
	rate       int
	ack        bool
	warmup     time.Duration
	duration   time.Duration
	lines      uint64
	window     uint64
	drain      time.Duration
	bufSize    int
	sampleMod  uint64
	serverLog  string
	json       bool
	verbose    bool
	cpuProfile string
	signed     signedConfig // -target chattyd-signed
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("chattyload", flag.ContinueOnError)
	fs.StringVar(&c.target, "target", "chattyd", "server to measure: chattyd, chattyd-signed (its signed listener, every message verified), chattyd-ws (its WebSocket listener), ncat (ncat --broker) or nats (nats-server, one subject)")
	fs.StringVar(&c.bin, "bin", "", "server binary (required for chattyd and chattyd-signed; default ncat for ncat, nats-server for nats)")
	fs.StringVar(&c.srvConfig, "config", "", "chattyd --config FILE (not with chattyd-signed, whose configuration the tool writes)")
	fs.StringVar(&c.signed.mode, "mode", "chained", "chattyd-signed: broadcast.signed.mode, chained or per-message")
	fs.IntVar(&c.signed.every, "checkpoint-every", 1000, "chattyd-signed, chained: broadcast.signed.checkpoint_every")
	fs.DurationVar(&c.signed.interval, "checkpoint-interval", 5*time.Millisecond, "chattyd-signed, chained: broadcast.signed.checkpoint_interval")
	fs.BoolVar(&c.signed.cache, "sigcache", true, "chattyd-signed: subscribers share a cache of verified signatures (signed.SignatureCache), so each signature is checked once in the tool; false checks every signature in every subscriber")
	extra := fs.String("args", "", "extra server arguments, space separated")
	fs.StringVar(&c.label, "label", "", "scenario name copied into the report")
	fs.IntVar(&c.subs, "subs", 100, "subscriber connections")
	fs.IntVar(&c.size, "size", 64, "line size in bytes without the \"\\n\"")
	fs.IntVar(&c.rate, "rate", 0, "lines per second to feed; 0 feeds as fast as the server takes them")
	fs.BoolVar(&c.ack, "ack", false, "subscribers answer every line with ACK_RECEIVED <n>, one write per read (chattyd; chattyd-signed: an ACK of its sequence number; nats: published on a subject nobody reads)")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "feeding before the measured window")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measured window")
	fs.Uint64Var(&c.lines, "lines", 0, "end the measured window after this many lines fed instead (bounded by -duration)")
	fs.Uint64Var(&c.window, "window", 4096, "at full speed, feed at most this many lines ahead of the slowest subscriber")
	fs.DurationVar(&c.drain, "drain", 15*time.Second, "how long subscribers may take to receive the last line once feeding stops")
	fs.IntVar(&c.bufSize, "bufsize", 256<<10, "subscriber read buffer in bytes")
	fs.Uint64Var(&c.sampleMod, "sample", 0, "sample the latency of every Nth line (0: every line with -rate, every 64th at full speed)")
	fs.StringVar(&c.serverLog, "server-log", "", "file for the server's stdout and stderr (default: discarded)")
	fs.BoolVar(&c.json, "json", false, "also print the report as one JSON line")
	fs.BoolVar(&c.verbose, "v", false, "log each phase to stderr")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the tool's own CPU profile to FILE (go tool pprof FILE)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.extraArgs = strings.Fields(*extra)
	switch {
	case c.target != "chattyd" && c.target != "chattyd-signed" && c.target != "chattyd-ws" && c.target != "ncat" && c.target != "nats":
		return c, fmt.Errorf("-target %q: want chattyd, chattyd-signed, chattyd-ws, ncat or nats", c.target)
	case (c.target == "chattyd" || c.target == "chattyd-signed" || c.target == "chattyd-ws") && c.bin == "":
		return c, fmt.Errorf("-target %s needs -bin PATH (build it with: go build -o bin/chattyd ./daemon)", c.target)
	case c.target == "chattyd-signed" && c.srvConfig != "":
		return c, fmt.Errorf("-config with -target chattyd-signed: the tool writes chattyd's configuration; set the signed listener with -mode, -checkpoint-every and -checkpoint-interval")
	case c.target == "chattyd-signed" && c.signed.mode != "chained" && c.signed.mode != "per-message":
		return c, fmt.Errorf("-mode %q: want chained or per-message", c.signed.mode)
	case c.target == "chattyd-signed" && (c.signed.every < 1 || c.signed.interval <= 0):
		return c, fmt.Errorf("-checkpoint-every must be at least 1 and -checkpoint-interval above 0")
	case c.target == "chattyd-ws" && (c.ack || c.srvConfig != ""):
		return c, fmt.Errorf("-target chattyd-ws: the WebSocket listener is read-only (no -ack), and the tool writes chattyd's configuration (no -config)")
	case c.target == "ncat" && c.ack:
		return c, fmt.Errorf("-ack with -target ncat: ncat relays every ack to all other clients, which measures nothing useful")
	case c.subs < 1:
		return c, fmt.Errorf("-subs %d: want at least 1", c.subs)
	case c.size < minLineSize || c.size > maxLineSize:
		return c, fmt.Errorf("-size %d: want %d to %d", c.size, minLineSize, maxLineSize)
	case c.rate < 0:
		return c, fmt.Errorf("-rate %d: want 0 (full speed) or more", c.rate)
	case c.duration <= 0 || c.warmup < 0 || c.drain <= 0:
		return c, fmt.Errorf("-duration and -drain must be positive, -warmup not negative")
	case c.window < 1:
		return c, fmt.Errorf("-window must be at least 1")
	case c.bufSize < 64<<10:
		return c, fmt.Errorf("-bufsize %d: want at least 65536", c.bufSize)
	}
	if c.sampleMod == 0 {
		c.sampleMod = 64
		if c.rate > 0 {
			c.sampleMod = 1
		}
	}
	if c.bin == "" {
		c.bin = c.target
		if c.target == "nats" {
			c.bin = "nats-server"
		}
	}
	return c, nil
}

// startCPUProfile profiles the tool into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
