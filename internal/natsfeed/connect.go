package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"
)

// ErrInsecureMode is wrapped by Connect's error for a secret file that
// group or others may read.
var ErrInsecureMode = errors.New("secret file is accessible by group or others")

// checkSecret refuses a secret file others may read, as the identity key
// is refused, naming the file and the fix.
func checkSecret(field, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: %s is not a regular file", field, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s: %w: %s has mode %04o; run: chmod 600 %s", field, ErrInsecureMode, path, perm, path)
	}
	return nil
}

// Conn is chattyd's connection to NATS and its JetStream context, with
// counters of its life.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream

	reconnects  atomic.Uint64
	disconnects atomic.Uint64
	inProcess   bool // on the embedded server without a socket
}

// ConnOptions are what Connect needs besides the configuration.
type ConnOptions struct {
	// InProcess, when set and there are no URLs, is the embedded server
	// to connect to without a socket.
	InProcess nats.InProcessConnProvider
	// Name is the connection's name, seen in the servers' monitoring.
	Name string
	// AckTimeout is the publisher's acknowledgement timeout
	// (WithPublishAsyncTimeout), so that no publish waits for ever.
	AckTimeout time.Duration
	// Window is the most publishes without acknowledgement.
	Window int
}

// Connect connects to NATS with the configuration's credentials and TLS.
// It does not wait for a server to answer: while none does, it keeps
// trying in the background, and the publisher holds the feed back.
func Connect(cfg config.NATS, o ConnOptions, log *logrus.Entry) (*Conn, error) {
	c := &Conn{}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // closed on purpose
			}
			c.disconnects.Add(1)
			log.WithError(err).Warn("NATS: disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.reconnects.Add(1)
			log.WithField("server", nc.ConnectedUrlRedacted()).Info("NATS: reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.WithError(err).Warn("NATS: asynchronous error")
		}),
	}
	if f := cfg.CredentialsFile; f != "" {
		if err := checkSecret("nats.credentials_file", f); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(f))
	}
	if f := cfg.NKeyFile; f != "" {
		if err := checkSecret("nats.nkey_file", f); err != nil {
			return nil, err
		}
		opt, err := nats.NkeyOptionFromSeed(f)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_file: %w", err)
		}
		opts = append(opts, opt)
	}
	if t := cfg.TLS; t.Given() {
		opts = append(opts, nats.Secure())
		if t.CAFile != "" {
			opts = append(opts, nats.RootCAs(t.CAFile))
		}
		if t.CertFile != "" {
			if err := checkSecret("nats.tls.key_file", t.KeyFile); err != nil {
				return nil, err
			}
			opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
		}
	}
	url := ""
	for i, u := range cfg.URLs {
		if i > 0 {
			url += ","
		}
		url += u
	}
	if url == "" {
		if o.InProcess == nil {
			return nil, errors.New("nats: no nats.urls and no embedded server to connect to")
		}
		opts = append(opts, nats.InProcessServer(o.InProcess))
		c.inProcess = true
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	window := max(o.Window, 1)
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncTimeout(max(o.AckTimeout, 100*time.Millisecond)))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS JetStream: %w", err)
	}
	c.NC, c.JS = nc, js
	return c, nil
}

// Reconnects returns how often the connection was re-established.
func (c *Conn) Reconnects() uint64 { return c.reconnects.Load() }

// State returns the connection's state: connected, connecting,
// reconnecting or closed.
func (c *Conn) State() string {
	switch c.NC.Status() {
	case nats.CONNECTED:
		return "connected"
	case nats.RECONNECTING:
		return "reconnecting"
	case nats.CLOSED:
		return "closed"
	case nats.DRAINING_PUBS, nats.DRAINING_SUBS:
		return "draining"
	default:
		return "connecting"
	}
}

// Server returns the URL of the server the connection is on, without
// credentials, or control.NATSServerInProcess for the embedded server
// reached without a socket; "" when it is on none.
func (c *Conn) Server() string {
	switch {
	case c.NC.Status() != nats.CONNECTED:
		return ""
	case c.inProcess:
		// nats.go reports its default URL, which nothing listens on.
		return control.NATSServerInProcess
	}
	return c.NC.ConnectedUrlRedacted()
}

// Close closes the connection.
func (c *Conn) Close() { c.NC.Close() }

// StreamConfig is the JetStream configuration of the configured stream.
func StreamConfig(s config.NATSStream) jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if s.Storage == config.StorageMemory {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:        s.Name,
		Description: "chattyd's shared feed",
		Subjects:    s.Subjects,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     orUnlimited(s.MaxMsgs),
		MaxBytes:    orUnlimited(s.MaxBytes),
		MaxAge:      s.MaxAge,
		Duplicates:  s.DuplicateWindow,
		Replicas:    s.Replicas,
		Storage:     storage,
	}
}

func orUnlimited(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// EnsureStream returns the configured stream, creating it or updating
// its limits when s.Create. It retries until ctx is done while the
// servers cannot answer (no server yet, or a cluster electing its
// leader, 2-7 s), but not when the stream does not exist and may not be
// created.
func EnsureStream(ctx context.Context, js jetstream.JetStream, s config.NATSStream, log *logrus.Entry) (jetstream.Stream, error) {
	var sc *jetstream.StreamConfig
	if s.Create {
		c := StreamConfig(s)
		sc = &c
	}
	return ensureStream(ctx, js, s.Name, sc, log)
}

// EnsureWorkStream is EnsureStream for the work-queue stream, created or
// updated to sc.
func EnsureWorkStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig, log *logrus.Entry) (jetstream.Stream, error) {
	return ensureStream(ctx, js, sc.Name, &sc, log)
}

// ensureStream returns stream name, created or updated to sc unless sc
// is nil.
func ensureStream(ctx context.Context, js jetstream.JetStream, name string, sc *jetstream.StreamConfig, log *logrus.Entry) (jetstream.Stream, error) {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var st jetstream.Stream
		var err error
		if sc != nil {
			st, err = js.CreateOrUpdateStream(actx, *sc)
		} else {
			st, err = js.Stream(actx, name)
		}
		cancel()
		switch {
		case err == nil:
			return st, nil
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return nil, fmt.Errorf("stream %s does not exist; create it, or set nats.stream.create: true", name)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("stream %s: %w (last error: %v)", name, ctx.Err(), err)
		}
		if attempt == 1 || attempt%20 == 0 {
			log.WithError(err).WithField("stream", name).Warn("NATS: stream not ready; retrying")
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}
