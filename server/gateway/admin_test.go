package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startTestAdmin serves the admin handler on loopback within lim.
func startTestAdmin(t *testing.T, lim adminLimits, withPprof bool) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var serving atomic.Bool
	serving.Store(true)
	a := startAdmin(ln, adminHandler(http.NotFoundHandler(), &serving, withPprof), lim, slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.shutdown(ctx); err != nil {
			t.Errorf("admin shutdown: %v", err)
		}
	})
	return ln.Addr()
}

// TestAdminWriteTimeoutSparesPprofProfiles: a CPU profile longer than the
// write timeout is served whole (pprof extends its write deadline by the
// seconds asked for), so the default 30 s profile works with
// AdminWriteTimeout.
func TestAdminWriteTimeoutSparesPprofProfiles(t *testing.T) {
	lim := defaultAdminLimits
	// The profile runs twice the write timeout. pprof extends its own
	// deadline to the write timeout plus the profile's seconds, so the
	// slack is the write timeout itself: 1 s for writing a profile, not
	// 100 ms, which a busy machine missed.
	lim.write = time.Second
	addr := startTestAdmin(t, lim, true)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+"/debug/pprof/profile?seconds=2", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("a 2 s profile with a write timeout of %s: %d, %d bytes, %v; want 200 and the profile", lim.write, resp.StatusCode, len(body), err)
	}
}

// TestAdminCutsOffSlowClients: a client that never finishes its headers,
// one that never sends the body it announced, and a kept-alive connection
// left idle are each closed by the server once their bound has passed
// (the bounds shortened here; TestAdminServerBounds checks the real ones).
func TestAdminCutsOffSlowClients(t *testing.T) {
	lim := adminLimits{
		readHeader: 100 * time.Millisecond, read: 300 * time.Millisecond, write: time.Second,
		idle: 200 * time.Millisecond, maxHeaderBytes: AdminMaxHeaderBytes,
	}
	addr := startTestAdmin(t, lim, false)

	for _, tc := range []struct {
		name    string
		send    string
		bound   time.Duration
		replied string // the start of what the server wrote before closing, if anything
	}{
		{"headers never finished", "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Slow: a", lim.readHeader, ""},
		{"body never sent", "POST /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: 1000\r\n\r\npart", lim.read, "HTTP/1.1 405 "},
		{"idle after a request", "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n", lim.idle, "HTTP/1.1 200 OK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			// The client never sends more: the server must close. The
			// deadline only bounds the test's wait.
			if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			elapsed := time.Since(start)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the server still held the connection after %s (bound %s); it wrote %q", elapsed, tc.bound, got)
			}
			if elapsed < tc.bound {
				t.Errorf("the server closed after %s, before its bound of %s", elapsed, tc.bound)
			}
			if !strings.HasPrefix(string(got), tc.replied) || (tc.replied == "" && len(got) > 0) {
				t.Errorf("the server wrote %q before closing, want %q", got, tc.replied)
			}
		})
	}
}
