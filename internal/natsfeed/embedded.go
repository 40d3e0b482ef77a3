package natsfeed

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/sirupsen/logrus"
)

// Embedded is a nats-server with JetStream running inside chattyd.
type Embedded struct {
	srv *server.Server
	log *logrus.Entry
}

// NewEmbedded configures the embedded server; it starts nothing. Its
// store directory is made (mode 0700) when missing.
func NewEmbedded(e config.NATSEmbedded, log *logrus.Entry) (*Embedded, error) {
	host, port, err := splitHostPort("nats.embedded.listen", e.Listen)
	if err != nil {
		return nil, err
	}
	dir := e.StoreDirOrDefault()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats.embedded.store_dir: %w", err)
	}
	name := e.ServerName
	if name == "" {
		// A name that stays across restarts: nats-server would take its
		// random id, and a JetStream cluster would see a new peer.
		if name, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("nats.embedded.server_name is empty and the host has no name: %w", err)
		}
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
	}
	if e.ClusterListen != "" {
		ch, cp, err := splitHostPort("nats.embedded.cluster_listen", e.ClusterListen)
		if err != nil {
			return nil, err
		}
		opts.Cluster = server.ClusterOpts{Name: e.ClusterName, Host: ch, Port: cp}
		for i, r := range e.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("nats.embedded.routes: element %d: %w", i, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log}, false, false, false)
	return &Embedded{srv: srv, log: log}, nil
}

func splitHostPort(field, addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", field, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("%s: port %q: %w", field, p, err)
	}
	if n == 0 {
		n = server.RANDOM_PORT // nats-server takes 0 for its default port
	}
	return h, n, nil
}

// Start starts the server and waits until it takes connections.
func (e *Embedded) Start(timeout time.Duration) error {
	e.srv.Start()
	if !e.srv.ReadyForConnections(timeout) {
		e.srv.Shutdown()
		return fmt.Errorf("embedded NATS server not ready within %s (is nats.embedded.listen taken?)", timeout)
	}
	e.log.WithField("listen", e.srv.ClientURL()).Info("Embedded NATS server is running")
	return nil
}

// ClientURL returns the URL of the server's client port.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server returns the server, to connect to in-process.
func (e *Embedded) Server() *server.Server { return e.srv }

// Run waits until ctx is done, then shuts the server down.
func (e *Embedded) Run(ctx context.Context) error {
	<-ctx.Done()
	e.Shutdown()
	return nil
}

// Shutdown stops the server and waits for it; it may be called again.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// natsLogger logs the server's messages through logrus.
type natsLogger struct{ log *logrus.Entry }

func (l natsLogger) Noticef(f string, a ...any) { l.log.Infof(f, a...) }
func (l natsLogger) Warnf(f string, a ...any)   { l.log.Warnf(f, a...) }
func (l natsLogger) Fatalf(f string, a ...any)  { l.log.Errorf(f, a...) }
func (l natsLogger) Errorf(f string, a ...any)  { l.log.Errorf(f, a...) }
func (l natsLogger) Debugf(f string, a ...any)  { l.log.Debugf(f, a...) }
func (l natsLogger) Tracef(f string, a ...any)  { l.log.Tracef(f, a...) }
