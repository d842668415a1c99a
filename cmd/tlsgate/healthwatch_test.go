package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestHealthWatchDoesNotHoldShutdown: a client-side health checker keeps
// a Health/Watch stream open for good. On SIGTERM it gets NOT_SERVING,
// then its stream ends with UNAVAILABLE, and serve exits long before its
// shutdown timeout (2 minutes here), which is where a Watch left open
// would have held it.
func TestHealthWatchDoesNotHoldShutdown(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 2 * time.Minute
	srv := startServe(t, "--dev-dir", t.TempDir(), "--shutdown-timeout", shutdownTimeout.String())
	cc, err := grpc.NewClient("passthrough:///"+srv.controlAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), shutdownTimeout)
	defer cancel()
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch status %v, %v; want SERVING", r.GetStatus(), err)
	}

	sent := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch status after SIGTERM %v, %v; want NOT_SERVING", r.GetStatus(), err)
	}
	if _, err := w.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("Watch after NOT_SERVING: %v, want the stream to end with UNAVAILABLE", err)
	}
	if code := srv.exitCode(); code != 0 {
		t.Fatalf("serve exited %d, want 0", code)
	}
	took := time.Since(sent)
	if took >= shutdownTimeout/2 {
		t.Fatalf("serve took %s to exit after SIGTERM: the Watch held the shutdown", took)
	}
	t.Logf("serve exited %s after SIGTERM", took)
}
