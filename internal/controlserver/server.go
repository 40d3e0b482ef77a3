// Package controlserver serves chattyd's control API, HTTP/JSON over a
// Unix socket, to the types of pkg/control; pkg/control/client calls it.
// docs/control.md describes every call, who may make it, the errors and
// how the socket is made.
package controlserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/pool/poolsize"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/sirupsen/logrus"
)

// Options configure a Server.
type Options struct {
	// Path is the socket's path, used when Listener is nil; empty means
	// DefaultSocketPath().
	Path string
	// Listener, when set, is used instead of creating a socket, for one
	// passed by systemd. The server closes it; it does not remove its
	// file, and takes no lock: chattyd then neither checks, removes nor
	// binds the path, which is what the lock serializes, and systemd
	// runs one instance of the service at a time.
	Listener net.Listener
	// Group names the group whose members may change things. Empty: only
	// root and the daemon's own user may. With Path, the socket and a
	// directory Listen creates are given to this group.
	Group string
	// MaxWorkers is the largest accepted scale; 0 means poolsize.Max.
	MaxWorkers int
}

// shutdownTimeout bounds how long Run waits for requests in progress.
const shutdownTimeout = 5 * time.Second

// Server serves the control API on one listener.
type Server struct {
	b          Backend
	log        *logrus.Entry
	ln         net.Listener
	http       *http.Server
	auth       authorizer
	maxWorkers int
	now        func() time.Time
	metrics    http.Handler // GET /metrics, one registry for every listener

	wg sync.WaitGroup // the goroutine that calls Backend.Stop

	mu       sync.Mutex // guards running, stopping, done and calls to wg.Go
	running  bool       // Run was called
	stopping bool       // Backend.Stop was called
	done     bool       // Run is waiting for wg: no more wg.Go
}

// New builds a server for b. Unless opts.Listener is set it creates the
// socket with Listen, so that a busy path fails here, before anything
// starts. It starts no goroutine; Run serves.
func New(opts Options, b Backend, log *logrus.Entry) (*Server, error) {
	if b == nil {
		return nil, errors.New("control: nil backend")
	}
	auth, err := newAuthorizer(opts.Group)
	if err != nil {
		return nil, err
	}
	maxWorkers := opts.MaxWorkers
	if maxWorkers <= 0 {
		maxWorkers = poolsize.Max
	}
	s := &Server{
		b:          b,
		log:        log.WithFields(logrus.Fields{logging.FieldComponent: "control", logging.FieldScope: "control"}),
		auth:       auth,
		maxWorkers: maxWorkers,
		now:        time.Now,
	}
	s.metrics = s.metricsHandler()
	s.ln = opts.Listener
	if s.ln == nil {
		path := opts.Path
		if path == "" {
			path = control.DefaultSocketPath()
		}
		ln, err := Listen(path, opts.Group)
		if err != nil {
			return nil, err
		}
		s.ln = ln
	}
	s.http = &http.Server{
		Handler:           s.handler(),
		ConnContext:       connContext,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          newStdLogger(s.log),
	}
	return s, nil
}

// MetricsHandler returns the handler of GET /metrics, for a listener
// besides the socket (metrics.listen): the same registry, so both answer
// alike. It does not check the method or the path.
func (s *Server) MetricsHandler() http.Handler { return s.metrics }

// Addr returns the socket's path.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx is done, then shuts down gracefully: it stops
// accepting, lets requests in progress finish (for a few seconds), closes
// the listener, which removes a socket file that Listen created and then
// releases its lock, and waits for its goroutines. It returns ctx's error after a clean shutdown.
// Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("control: Run called twice")
	}
	s.running = true
	s.mu.Unlock()

	s.log.WithField("socket", s.Addr()).Info("control socket listening")
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()

	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("serve control socket %s: %w", s.Addr(), err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if serr := s.http.Shutdown(sctx); serr != nil {
			s.log.WithError(serr).Warn("control requests still running at shutdown; closing them")
			s.http.Close()
		}
		cancel()
		<-errc // http.ErrServerClosed
		err = ctx.Err()
	}
	// After Close, a handler may still be running; it must not start the
	// stop goroutine once Wait has begun.
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// route is one endpoint. change marks the ones that need authorization.
type route struct {
	method, path string
	change       bool
	h            http.HandlerFunc
}

func (s *Server) handler() http.Handler {
	routes := []route{
		{http.MethodGet, control.PathStatus, false, s.handleStatus},
		{http.MethodGet, control.PathClients, false, s.handleClients},
		{http.MethodGet, control.PathWorkers, false, s.handleWorkers},
		{http.MethodGet, control.PathIdent, false, s.handleIdentity},
		{http.MethodGet, control.PathMetrics, false, s.metrics.ServeHTTP},
		{http.MethodPost, control.PathSend, true, s.handleSend},
		{http.MethodPost, control.PathScale, true, s.handleScale},
		{http.MethodPost, control.PathStop, true, s.handleStop},
		{http.MethodGet, control.PathDeadLetters, false, s.handleDeadLetters},
		{http.MethodPost, control.PathRetry, true, s.handleRetry},
	}
	mux := http.NewServeMux()
	allow := map[string][]string{}
	for _, r := range routes {
		h := r.h
		if r.change {
			h = s.authorized(h)
		}
		mux.HandleFunc(r.method+" "+r.path, h)
		allow[r.path] = append(allow[r.path], r.method)
		if r.method == http.MethodGet {
			allow[r.path] = append(allow[r.path], http.MethodHead)
		}
	}
	// The method-less patterns are less specific than the ones above, so
	// they only catch other methods; answer them in JSON, not plain text.
	for path, methods := range allow {
		allowed := strings.Join(methods, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allowed)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; use %s", r.Method, path, allowed))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s; see docs/control.md", r.URL.Path))
	})
	return s.recoverer(mux)
}

// recoverer answers 500 instead of dropping the connection when a handler
// (or the backend) panics, and logs it.
func (s *Server) recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.WithField("path", r.URL.Path).Errorf("control handler panic: %v", v)
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// authorized lets the request through only if its peer may change things.
func (s *Server) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := peerFrom(r.Context())
		ok, err := s.auth.mayChange(p)
		if err != nil {
			s.log.WithError(err).Warn("cannot check group membership")
		}
		if !ok {
			s.log.WithFields(logrus.Fields{"uid": p.uid, "pid": p.pid, "path": r.URL.Path}).
				Warnf("refused %s %s from %s", r.Method, r.URL.Path, p)
			writeError(w, http.StatusForbidden, s.auth.denial(p))
			return
		}
		h(w, r)
	}
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Status())
}

func (s *Server) handleClients(w http.ResponseWriter, r *http.Request) {
	cs := s.b.Clients()
	if cs == nil {
		cs = []control.Client{}
	}
	writeJSON(w, http.StatusOK, cs)
}

func (s *Server) handleWorkers(w http.ResponseWriter, r *http.Request) {
	ws := s.b.Workers()
	if ws == nil {
		ws = []control.Worker{}
	}
	writeJSON(w, http.StatusOK, ws)
}

func (s *Server) handleIdentity(w http.ResponseWriter, r *http.Request) {
	id, err := s.b.Identity()
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, id)
}

func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	m, err := decodeSend(http.MaxBytesReader(w, r.Body, control.MaxRequestBytes), s.now())
	if err != nil {
		writeDecodeError(w, err)
		return
	}
	seq, err := s.b.Send(m)
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	p := peerFrom(r.Context())
	s.log.WithFields(logrus.Fields{"uid": p.uid, "type": m.Type.String(), "seq": seq}).Info("message sent")
	writeJSON(w, http.StatusOK, control.SendResponse{Seq: seq, Line: m.String()})
}

func (s *Server) handleScale(w http.ResponseWriter, r *http.Request) {
	n, err := decodeScale(http.MaxBytesReader(w, r.Body, control.MaxRequestBytes), s.maxWorkers)
	if err != nil {
		writeDecodeError(w, err)
		return
	}
	old, err := s.b.Scale(n)
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	p := peerFrom(r.Context())
	s.log.WithFields(logrus.Fields{"uid": p.uid, "old": old, "new": n}).Info("pool scaled")
	writeJSON(w, http.StatusOK, control.ScaleResponse{Old: old, New: n})
}

func (s *Server) handleDeadLetters(w http.ResponseWriter, r *http.Request) {
	ds, err := s.b.DeadLetters()
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	if ds == nil {
		ds = []control.DeadLetter{}
	}
	writeJSON(w, http.StatusOK, ds)
}

func (s *Server) handleRetry(w http.ResponseWriter, r *http.Request) {
	seq, err := decodeRetry(http.MaxBytesReader(w, r.Body, control.MaxRequestBytes))
	if err != nil {
		writeDecodeError(w, err)
		return
	}
	if err := s.b.Retry(seq); err != nil {
		s.backendError(w, r, err)
		return
	}
	p := peerFrom(r.Context())
	s.log.WithFields(logrus.Fields{"uid": p.uid, "seq": seq}).Info("dead letter queued again")
	writeJSON(w, http.StatusOK, control.RetryResponse{Seq: seq})
}

// handleStop answers 202 and flushes it, and only then asks the backend to
// stop, from a goroutine that Run waits for, so that the answer reaches
// the client before the daemon goes away.
func (s *Server) handleStop(w http.ResponseWriter, r *http.Request) {
	if err := decodeEmpty(http.MaxBytesReader(w, r.Body, control.MaxRequestBytes)); err != nil {
		writeDecodeError(w, err)
		return
	}
	p := peerFrom(r.Context())
	s.log.WithFields(logrus.Fields{"uid": p.uid, "pid": p.pid}).Info("stop requested")
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusAccepted, control.StopResponse{Stopping: true})
	if err := http.NewResponseController(w).Flush(); err != nil {
		s.log.WithError(err).Debug("flush stop answer")
	}
	s.stopBackend()
}

// stopBackend calls Backend.Stop once, from a goroutine that Run waits for.
func (s *Server) stopBackend() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.done {
		return
	}
	s.stopping = true
	s.wg.Go(s.b.Stop)
}

// backendError answers an error of the backend with the status its
// sentinel asks for.
func (s *Server) backendError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, ErrNoIdentity), errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrNoQueue):
		writeError(w, http.StatusConflict, err.Error())
	default:
		s.log.WithError(err).WithField("path", r.URL.Path).Error("backend failed")
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(control.ErrorResponse{Error: "encode answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, control.ErrorResponse{Error: msg})
}

func newStdLogger(l *logrus.Entry) *log.Logger {
	return log.New(stdWriter{l}, "", 0)
}

// stdWriter turns net/http's error log lines into warnings.
type stdWriter struct{ log *logrus.Entry }

func (w stdWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}
