package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/server/gateway"
)

// adminGet sends GET path to g's admin listener with extra headers and
// returns the status and body.
func adminGet(t *testing.T, g *gateway.Gateway, path string, header http.Header) (int, string) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.AdminAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// TestAdminHeadersOverTheLimitGet431: the admin listener answers 431 to
// headers larger than AdminMaxHeaderBytes (net/http's default is 1 MiB),
// and serves headers within it.
func TestAdminHeadersOverTheLimitGet431(t *testing.T) {
	cfg, _ := config(t)
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serve(t.Context(), t, g)
	for _, tc := range []struct {
		size int
		want int
	}{
		{gateway.AdminMaxHeaderBytes / 2, http.StatusOK},
		{2*gateway.AdminMaxHeaderBytes + 4096, http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(fmt.Sprint(tc.size, " bytes"), func(t *testing.T) {
			code, body := adminGet(t, g, "/healthz", http.Header{"X-Big": {strings.Repeat("a", tc.size)}})
			if code != tc.want {
				t.Errorf("/healthz with a header of %d bytes: %d %q, want %d", tc.size, code, body, tc.want)
			}
		})
	}
}

// TestAdminServerBounds: the admin http.Server has the documented read,
// write and idle timeouts and header limit.
func TestAdminServerBounds(t *testing.T) {
	cfg, _ := config(t)
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serve(t.Context(), t, g)
	srv := gateway.AdminHTTPServer(g)
	for _, b := range []struct {
		name      string
		got, want time.Duration
	}{
		{"ReadHeaderTimeout", srv.ReadHeaderTimeout, gateway.AdminReadHeaderTimeout},
		{"ReadTimeout", srv.ReadTimeout, gateway.AdminReadTimeout},
		{"WriteTimeout", srv.WriteTimeout, gateway.AdminWriteTimeout},
		{"IdleTimeout", srv.IdleTimeout, gateway.AdminIdleTimeout},
	} {
		if b.got != b.want || b.got <= 0 {
			t.Errorf("admin %s = %s, want %s", b.name, b.got, b.want)
		}
	}
	if srv.MaxHeaderBytes != gateway.AdminMaxHeaderBytes || srv.MaxHeaderBytes <= 0 {
		t.Errorf("admin MaxHeaderBytes = %d, want %d", srv.MaxHeaderBytes, gateway.AdminMaxHeaderBytes)
	}
}
