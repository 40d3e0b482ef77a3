package daemon

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/sirupsen/logrus"
)

// metricsShutdownTimeout bounds how long the metrics listener waits for
// scrapes in progress when the daemon stops.
const metricsShutdownTimeout = 2 * time.Second

// metricsServer serves the control socket's GET /metrics on TCP
// (metrics.listen), for Prometheus. It is read-only: every other path is
// 404 and every other method 405.
type metricsServer struct {
	ln   net.Listener
	http *http.Server
	log  *logrus.Entry
}

// bindMetrics binds metrics.listen, so that a taken port fails at start.
// It serves nothing until serve and run.
func bindMetrics(addr string, log *logrus.Entry) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	return &metricsServer{ln: ln, log: log}, nil
}

// serve sets what GET /metrics answers: the control server's handler.
func (m *metricsServer) serve(metrics http.Handler) {
	m.http = &http.Server{
		Handler:           metricsOnly(metrics),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(warnWriter{m.log}, "", 0),
	}
}

// metricsOnly lets GET and HEAD of /metrics through to h, and nothing
// else.
func metricsOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != control.PathMetrics {
			http.Error(w, "not found: this port serves GET /metrics only", http.StatusNotFound)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method "+r.Method+" not allowed: this port serves GET /metrics only", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// addr is where the listener is bound.
func (m *metricsServer) addr() net.Addr { return m.ln.Addr() }

// run serves until ctx is done, then lets scrapes in progress finish
// for a moment and closes the listener. It returns nil after a stop.
func (m *metricsServer) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- m.http.Serve(m.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve metrics.listen %s: %w", m.addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
	defer cancel()
	if err := m.http.Shutdown(sctx); err != nil {
		m.http.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics.listen %s: %w", m.addr(), err)
	}
	return nil
}

// close closes the listener of a server that never ran, for New's error
// paths.
func (m *metricsServer) close() { m.ln.Close() }

// warnWriter turns net/http's error log lines into warnings.
type warnWriter struct{ log *logrus.Entry }

func (w warnWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}
