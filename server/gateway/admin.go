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

// startAdmin serves h on ln until shutdown.
func startAdmin(ln net.Listener, h http.Handler, log *slog.Logger) *admin {
	a := &admin{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
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
