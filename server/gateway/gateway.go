// Package gateway assembles tlsgate: the data-plane server, the control
// plane (gRPC API, health, reflection), the metrics and the admin
// endpoint, built from one Config, started together and stopped in one
// order. `tlsgate serve`, the load tool and the test harnesses all run
// the gateway through it; nothing else wires the planes together.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"

	"github.com/tlsgate/tlsgate/internal/metrics"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("gateway: closed")

// Gateway is a running tlsgate: its listeners are bound from New on.
type Gateway struct {
	cfg Config
	log *slog.Logger

	srv *server.Server
	hub *control.Hub
	ctl *control.Server  // nil with the control plane off
	met *metrics.Metrics // nil with the admin endpoint off

	ln, ctlLn, adminLn net.Listener // ctlLn and adminLn nil when off
	adm                *admin       // set by Serve

	// serving is the health state of the gRPC health service and of the
	// admin /healthz and /readyz alike.
	serving atomic.Bool
	ready   chan struct{} // closed once Serve has set SERVING

	mu      sync.Mutex
	started bool // Serve was called
	closed  bool // Shutdown was called

	stopOnce sync.Once
	stopping chan struct{} // closed when Shutdown begins
	stopErr  error
}

// New validates cfg, builds both planes and binds their listeners. On an
// error it closes what it had opened.
func New(cfg Config) (_ *Gateway, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, ready: make(chan struct{}), stopping: make(chan struct{})}
	defer func() {
		if err != nil {
			g.closeListeners()
		}
	}()

	sc := cfg.Server
	// Each connection is a file descriptor: past the limit, accept fails
	// (EMFILE) rather than refusing cleanly at MaxConns.
	sc.MaxConns = fitFileLimit(sc.MaxConns, g.log)
	fallback := sc.Handler
	if fallback == nil {
		fallback = server.Echo{}
	}
	// The hub routes inbound packets to the control plane's Receive
	// streams (or the fallback when none selects the session) and
	// lifecycle events to its watchers.
	g.hub = control.NewHub(control.HubConfig{
		Fallback: fallback, StreamBuffer: cfg.StreamBuffer, StreamBufferBytes: cfg.StreamBufferBytes,
		NoConsumer: cfg.NoConsumer, PauseTimeout: cfg.ConsumePauseTimeout,
	})
	sc.Handler = g.hub
	if sc.Logger == nil {
		sc.Logger = g.log
	}
	if cfg.AdminAddr != "" {
		// The metrics observe durations and count lifecycle events; the
		// rest they read from the planes at scrape time.
		g.met = metrics.New(cfg.Version)
		if sc.Observer == nil {
			sc.Observer = g.met
		}
	}
	sc.OnEvent = g.onEvent(cfg.Server.OnEvent)
	if g.srv, err = server.New(sc); err != nil {
		return nil, err
	}
	if g.met != nil {
		g.met.Attach(g.srv, g.hub)
	}
	if g.ln, err = listen("Addr", cfg.Addr); err != nil {
		return nil, err
	}
	if cfg.ControlAddr != "" {
		if g.ctl, err = g.newControl(); err != nil {
			return nil, err
		}
		if g.ctlLn, err = listen("ControlAddr", cfg.ControlAddr); err != nil {
			return nil, err
		}
	}
	if cfg.AdminAddr != "" {
		if g.adminLn, err = listen("AdminAddr", cfg.AdminAddr); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// onEvent counts an event, then publishes it to the watchers, then hands
// it to next: what a watcher has seen is already in /metrics.
func (g *Gateway) onEvent(next func(server.Event)) func(server.Event) {
	return func(e server.Event) {
		if g.met != nil {
			g.met.Event(e)
		}
		g.hub.Publish(e)
		if next != nil {
			next(e)
		}
	}
}

// newControl builds the control plane, with the metrics' interceptors
// outermost, so that they count every call with its final code.
func (g *Gateway) newControl() (*control.Server, error) {
	cc := control.Config{
		Gateway: g.srv, Hub: g.hub, Token: g.cfg.ControlToken, TLSConfig: g.cfg.ControlTLS,
		MaxStreams: g.cfg.MaxStreams, MaxHeaderBytes: g.cfg.ControlMaxHeaderBytes, MaxCallsPerConn: g.cfg.ControlMaxCallsPerConn,
		MaxConns: g.cfg.ControlMaxConns, KeepaliveMinTime: g.cfg.ControlKeepaliveMinTime,
		Logger: g.log.With("plane", "control"),
	}
	if g.met != nil {
		cc.UnaryInterceptors = []grpc.UnaryServerInterceptor{g.met.GRPCUnary()}
		cc.StreamInterceptors = []grpc.StreamServerInterceptor{g.met.GRPCStream()}
	}
	ctl, err := control.New(cc)
	if err != nil {
		return nil, err
	}
	if g.met != nil {
		g.met.InitializeGRPC(ctl)
	}
	return ctl, nil
}

// listen binds addr; its error names the Config field.
func listen(field, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &server.ConfigError{Field: field, Problem: fmt.Sprintf("%s: %v", addr, err), Err: err}
	}
	return ln, nil
}

// Server is the data plane.
func (g *Gateway) Server() *server.Server { return g.srv }

// Hub is what connects the data plane to the control plane's streams.
func (g *Gateway) Hub() *control.Hub { return g.hub }

// Control is the control plane, or nil when it is off.
func (g *Gateway) Control() *control.Server { return g.ctl }

// Addr is the data plane's bound address.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// ControlAddr is the control plane's bound address, or nil when it is off.
func (g *Gateway) ControlAddr() net.Addr { return addrOf(g.ctlLn) }

// AdminAddr is the admin endpoint's bound address, or nil when it is off.
func (g *Gateway) AdminAddr() net.Addr { return addrOf(g.adminLn) }

func addrOf(ln net.Listener) net.Addr {
	if ln == nil {
		return nil
	}
	return ln.Addr()
}

// Ready is closed once Serve has started every plane and health reports
// SERVING.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Serve serves every plane until ctx ends, a plane's listener fails, or
// Shutdown is called. When ctx ends or a plane fails, Serve shuts the
// gateway down itself, bounded by Config.Server.ShutdownTimeout, and
// returns the plane's error, or nil. After a Shutdown called elsewhere it
// returns nil once that Shutdown is done; called after Shutdown, it
// returns ErrServerClosed at once.
func (g *Gateway) Serve(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrServerClosed
	}
	if g.started {
		g.mu.Unlock()
		return errors.New("gateway: Serve called twice")
	}
	g.started = true
	g.mu.Unlock()

	planes := make(chan error, 3)
	n := 1
	go func() { planes <- planeError("data plane", g.srv.Serve(g.ln)) }()
	if g.ctl != nil {
		n++
		go func() { planes <- planeError("control plane", g.ctl.Serve(g.ctlLn)) }()
		if g.cfg.plaintextToken() {
			g.log.Warn("the control plane takes its bearer token over plaintext gRPC on a non-loopback address (--insecure-control-token): anyone who can read the traffic can take the token", "control_addr", g.cfg.ControlAddr)
		}
	}
	if g.adminLn != nil {
		n++
		if g.cfg.Pprof && !isLoopback(g.cfg.AdminAddr) {
			g.log.Warn("pprof is served on a non-loopback admin address: anyone who can reach it can profile the process and read its command line", "admin_addr", g.cfg.AdminAddr)
		}
		g.adm = startAdmin(g.adminLn, adminHandler(g.met.Handler(), &g.serving, g.cfg.Pprof), defaultAdminLimits, g.log.With("plane", "admin"))
		go func() {
			<-g.adm.done
			planes <- planeError("admin endpoint", g.adm.err)
		}()
	}
	g.setServing(true)
	close(g.ready)
	g.log.Info("serving", "addr", g.Addr().String(), "control_addr", addrString(g.ControlAddr()), "admin_addr", addrString(g.AdminAddr()))

	var err error
	select {
	case err = <-planes: // a listener failed
		n--
	case <-ctx.Done():
		g.log.Info("stopping: closing every session gracefully", "cause", context.Cause(ctx), "shutdown_timeout", g.cfg.Server.ShutdownTimeout)
	case <-g.stopping: // Shutdown was called elsewhere
	}
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.Server.ShutdownTimeout)
	defer cancel()
	if serr := g.Shutdown(sctx); serr != nil {
		g.log.Warn("shutdown timeout expired: the remaining connections were closed at once", "err", serr)
	}
	for ; n > 0; n-- {
		if perr := <-planes; err == nil {
			err = perr
		}
	}
	if err == nil {
		g.log.Info("stopped")
	}
	return err
}

// planeError is a plane's Serve error, nil for the end Shutdown caused.
func planeError(plane string, err error) error {
	if err == nil || errors.Is(err, server.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s: %w", plane, err)
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// Shutdown stops the gateway gracefully, in this order: health goes
// NOT_SERVING; the data plane stops accepting and closes every session,
// its queue written first; the control plane ends its streams (after the
// sessions, so that watchers see every closed event) and stops; the
// admin endpoint stops last, so that metrics and health stay readable
// during the drain. When ctx ends first, what is left is closed at once
// and the error says so. Later calls wait for the first and return its
// result.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.stopOnce.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		close(g.stopping)
		g.stopErr = g.shutdown(ctx)
	})
	return g.stopErr
}

func (g *Gateway) shutdown(ctx context.Context) error {
	g.setServing(false)
	err := g.srv.Shutdown(ctx)
	if g.ctl != nil {
		g.ctl.Stop(ctx)
	}
	if g.adm != nil {
		if aerr := g.adm.shutdown(ctx); aerr != nil && err == nil {
			err = fmt.Errorf("admin endpoint: %w", aerr)
		}
	}
	g.closeListeners() // those Serve never served
	return err
}

// closeListeners closes every bound listener; closing one a plane has
// already closed does nothing.
func (g *Gateway) closeListeners() {
	for _, ln := range []net.Listener{g.ln, g.ctlLn, g.adminLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// setServing sets the health state of every plane.
func (g *Gateway) setServing(on bool) {
	g.serving.Store(on)
	if g.ctl != nil {
		g.ctl.SetServing(on)
	}
}
