package control

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// No request makes the real service panic, so this internal test serves a
// panicking ControlService through the real interceptor chain.

type panicky struct {
	tlsgatev1.UnimplementedControlServiceServer
}

func (panicky) GetSession(context.Context, *tlsgatev1.GetSessionRequest) (*tlsgatev1.GetSessionResponse, error) {
	panic("unary boom")
}

func (panicky) Receive(*tlsgatev1.ReceiveRequest, tlsgatev1.ControlService_ReceiveServer) error {
	panic("stream boom")
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRecovery: a panic in a handler becomes INTERNAL and is logged, and
// the server keeps serving.
func TestRecovery(t *testing.T) {
	var logs syncBuffer
	api := serveChain(t, slog.New(slog.NewTextHandler(&logs, nil)), panicky{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	for range 2 { // the server survives the first
		_, err := api.GetSession(ctx, &tlsgatev1.GetSessionRequest{SessionId: 1})
		if st, _ := status.FromError(err); st.Code() != codes.Internal || st.Message() != "internal error" {
			t.Fatalf("GetSession: %v; want INTERNAL \"internal error\"", err)
		}
	}
	rs, err := api.Receive(ctx, &tlsgatev1.ReceiveRequest{})
	if err == nil {
		_, err = rs.Recv()
	}
	if st, _ := status.FromError(err); st.Code() != codes.Internal {
		t.Fatalf("Receive: %v; want INTERNAL", err)
	}
	// Validation still runs ahead of the handler.
	_, err = api.GetSession(ctx, &tlsgatev1.GetSessionRequest{})
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
		t.Fatalf("GetSession of session 0: %v; want INVALID_ARGUMENT", err)
	}

	out := logs.String()
	for _, want := range []string{"panic in RPC handler", "unary boom", "stream boom", "grpc.code=Internal"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the log lacks %q:\n%s", want, out)
		}
	}
}

// serveChain serves impl through the real interceptor chain, logging to
// log, on a loopback port, and returns a client of it.
func serveChain(t *testing.T, log *slog.Logger, impl tlsgatev1.ControlServiceServer) tlsgatev1.ControlServiceClient {
	t.Helper()
	unary, stream := interceptorChain(Config{Logger: log}, &Service{maxPayload: 100}, nil)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
	tlsgatev1.RegisterControlServiceServer(srv, impl)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return tlsgatev1.NewControlServiceClient(cc)
}
