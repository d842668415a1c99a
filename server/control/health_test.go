package control_test

import (
	"context"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// TestHealth: NOT_SERVING until SetServing(true), for the server and for
// the control service; it follows SetServing.
func TestHealth(t *testing.T) {
	e := start(t, setup{notServing: true})
	hc := healthpb.NewHealthClient(e.conn(t))
	want := func(st healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", tlsgatev1.ControlService_ServiceDesc.ServiceName} {
			resp, err := hc.Check(timeout(t, wait), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || resp.GetStatus() != st {
				t.Fatalf("Check(%q) = %v, %v; want %s", svc, resp, err, st)
			}
		}
	}
	want(healthpb.HealthCheckResponse_NOT_SERVING)
	e.ctl.SetServing(true)
	want(healthpb.HealthCheckResponse_SERVING)
	e.ctl.SetServing(false)
	want(healthpb.HealthCheckResponse_NOT_SERVING)
	e.ctl.SetServing(true)
	want(healthpb.HealthCheckResponse_SERVING)
}

// TestHealthAtStop: health turns NOT_SERVING as soon as Stop begins, while
// open calls may still finish.
func TestHealthAtStop(t *testing.T) {
	e := start(t, setup{})
	ctx, cancel := context.WithCancel(timeout(t, wait))
	defer cancel()
	hw, err := healthpb.NewHealthClient(e.conn(t)).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := hw.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch = %v, %v; want SERVING", resp, err)
	}
	stopped := make(chan struct{})
	go func() {
		e.ctl.Stop(timeout(t, wait))
		close(stopped)
	}()
	if resp, err := hw.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after Stop began = %v, %v; want NOT_SERVING", resp, err)
	}
	// The graceful stop waits for the open Watch call; ending it lets
	// Stop return.
	cancel()
	select {
	case <-stopped:
	case <-timeout(t, wait).Done():
		t.Fatal("Stop did not return")
	}
}
