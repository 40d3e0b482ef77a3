package daemon

import (
	"fmt"
	"net"

	"github.com/chatty-dev/chatty/internal/broadcast"
	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/pool"
)

// poolOptions derives the pool's options from a configuration. Workers
// connect to the bound address, on loopback when it is a wildcard.
func (d *Daemon) poolOptions(cfg config.Config) pool.Options {
	addr, sw := d.listeners.workerTarget(cfg.Pool.Worker.Protocol)
	var creds func(int) ([]byte, func(), error)
	if sw != nil && sw.Authenticate {
		creds = d.listeners.workerKey
	}
	cmd := cfg.Pool.Command
	if len(cmd) == 0 && d.opts.WorkerCommand != nil {
		cmd = d.opts.WorkerCommand(cfg.Pool.Worker, sw)
	}
	return pool.Options{
		Credentials:    creds,
		Size:           cfg.Pool.Size,
		Command:        cmd,
		Env:            workerEnv(),
		Addr:           dialAddr(addr),
		MinUptime:      cfg.Pool.MinUptime,
		BackoffInitial: cfg.Pool.BackoffInitial,
		BackoffMax:     cfg.Pool.BackoffMax,
		StopTimeout:    cfg.Pool.StopTimeout,
		Guard:          d.opts.GuardCommand,
		// Only the text listener places workers: signed workers would
		// keep their slots awaiting, for nothing, and so would workers
		// of the work queue (delivery one), which hands out lines of its
		// own.
		Replay: cfg.Pool.Replay == config.ReplayUnacked && sw == nil && cfg.Broadcast.Delivery != config.DeliveryOne,
	}
}

// placeWorker is the text listener's Placer: a connection whose other end
// is held by the worker a pool slot awaits (pool.replay: unacked) starts
// after the last line that slot's previous worker acknowledged. Every
// other connection starts live; when no slot awaits, that costs one
// atomic load, and the pool is asked only about loopback peers.
func (d *Daemon) placeWorker(conn net.Conn) broadcast.Placement {
	if !d.pool.Awaiting() || !loopbackPeer(conn) {
		return broadcast.Placement{}
	}
	cl, ok := d.pool.Claim(conn)
	if !ok {
		return broadcast.Placement{}
	}
	return broadcast.Placement{
		From:    cl.From,
		Started: cl.Started,
		Ended:   func(e broadcast.ClientEnd) { cl.Ended(e.Acked, e.Sent) },
	}
}

// loopbackPeer reports whether conn's peer is on a loopback address, so
// on this host.
func loopbackPeer(conn net.Conn) bool {
	a, ok := conn.RemoteAddr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

// dialAddr turns a listener's address into one a local worker can dial.
func dialAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := tcp.IP
	switch {
	case ip == nil || ip.Equal(net.IPv4zero):
		ip = net.IPv4(127, 0, 0, 1)
	case ip.Equal(net.IPv6unspecified):
		ip = net.IPv6loopback
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port))
}

// workerEnv blanks the systemd variables meant for chattyd alone, so that
// a worker never notifies systemd or takes chattyd's sockets.
func workerEnv() []string {
	return []string{"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=", "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES="}
}
