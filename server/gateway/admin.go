package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"
)

// The admin listener's bounds, fixed: it serves a few small GETs to
// operators and scrapers, so each bound is far above what they need and
// far below what would let a client hold a connection open or make the
// server buffer much.
const (
	// AdminReadHeaderTimeout bounds the reading of a request's headers.
	AdminReadHeaderTimeout = 5 * time.Second
	// AdminReadTimeout bounds the reading of a whole request, body
	// included: a client that never finishes its request is cut off.
	AdminReadTimeout = 10 * time.Second
	// AdminWriteTimeout bounds a response, from the end of its request's
	// headers. pprof's profile and trace (Go 1.23 on) extend their own
	// write deadline to this plus the ?seconds= asked for, so profiles
	// of any length, the default 30 s included, are not cut off.
	AdminWriteTimeout = 30 * time.Second
	// AdminIdleTimeout closes a kept-alive connection idle this long,
	// longer than the usual scrape intervals.
	AdminIdleTimeout = 2 * time.Minute
	// AdminMaxHeaderBytes bounds a request's headers, request line
	// included; a larger one is answered 431 (net/http reads up to 4 KiB
	// beyond it before it decides).
	AdminMaxHeaderBytes = 16 << 10
)

// adminLimits are the http.Server bounds of the admin listener; tests
// shorten them.
type adminLimits struct {
	readHeader, read, write, idle time.Duration
	maxHeaderBytes                int
}

var defaultAdminLimits = adminLimits{
	readHeader: AdminReadHeaderTimeout, read: AdminReadTimeout, write: AdminWriteTimeout,
	idle: AdminIdleTimeout, maxHeaderBytes: AdminMaxHeaderBytes,
}

// admin is serve's HTTP listener for operators: /metrics, /healthz,
// /readyz and, with --pprof, /debug/pprof/.
type admin struct {
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
	err  error         // Serve's error; valid once done is closed
}

// adminHandler routes the admin endpoints. serving is the health state
// the gRPC health service also reports: true once both planes are up,
// false from the start of shutdown.
func adminHandler(metrics http.Handler, serving *atomic.Bool, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	health := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if serving.Load() {
			_, _ = fmt.Fprintln(w, "SERVING")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintln(w, "NOT_SERVING")
	}
	mux.HandleFunc("GET /healthz", health)
	mux.HandleFunc("GET /readyz", health)
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// startAdmin serves h on ln, within lim, until shutdown.
func startAdmin(ln net.Listener, h http.Handler, lim adminLimits, log *slog.Logger) *admin {
	a := &admin{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: lim.readHeader,
			ReadTimeout:       lim.read,
			WriteTimeout:      lim.write,
			IdleTimeout:       lim.idle,
			MaxHeaderBytes:    lim.maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.err = err
		}
	}()
	return a
}

// shutdown stops the listener, letting requests in flight finish until
// ctx ends, and then closes what is left.
func (a *admin) shutdown(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	if err != nil {
		_ = a.srv.Close()
	}
	<-a.done
	if a.err != nil {
		return a.err
	}
	return err
}
