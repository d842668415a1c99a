package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
)

// countingHandler counts the packets it processes, then passes them on.
type countingHandler struct {
	next server.Handler
	n    counter
}

func (h *countingHandler) Handle(ctx context.Context, s *server.Session, p server.Packet) {
	h.next.Handle(ctx, s, p)
	h.n.add(p.ConnID, 1)
}

// gateway is the system under test: in-process (srv set), wired as
// `tlsgate serve` wires it (the control hub as the handler, its fallback
// counting), or a running one reached at addr and ctlAddr.
type gateway struct {
	srv     *server.Server
	ctl     *control.Server
	handled *countingHandler // in-process only
	addr    string
	ctlAddr string
	served  chan error
	ctlDone chan error
}

func (g *gateway) inProcess() bool { return g.srv != nil }

// startGateway runs a gateway and its control plane on loopback ports.
func startGateway(ctx context.Context, cert tls.Certificate, fallback server.Handler, log *slog.Logger) (*gateway, error) {
	g := &gateway{handled: &countingHandler{next: fallback}, served: make(chan error, 1), ctlDone: make(chan error, 1)}
	hub := control.NewHub(g.handled, 0)
	var err error
	g.srv, err = server.New(server.Config{
		Addr:      "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler:   hub,
		OnEvent:   hub.Publish,
		Logger:    log.With("plane", "data"),
	})
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g.addr = ln.Addr().String()
	go func() { g.served <- g.srv.Serve(context.Background(), ln) }()
	g.ctl, err = control.New(control.Config{Gateway: g.srv, Hub: hub, Logger: log.With("plane", "control")})
	if err == nil {
		var cln net.Listener
		cln, err = lc.Listen(ctx, "tcp", "127.0.0.1:0")
		if err == nil {
			g.ctlAddr = cln.Addr().String()
			go func() { g.ctlDone <- g.ctl.Serve(cln) }()
			g.ctl.SetServing(true)
		}
	}
	if err != nil {
		g.ctl = nil
		_ = g.stop()
		return nil, err
	}
	return g, nil
}

// stop shuts an in-process gateway down as serve does; it reports a
// shutdown that had to force connections closed.
func (g *gateway) stop() error {
	if g.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := g.srv.Shutdown(ctx)
	if g.ctl != nil {
		g.ctl.Stop(ctx)
		if cerr := <-g.ctlDone; cerr != nil && err == nil {
			err = cerr
		}
	}
	if serr := <-g.served; serr != nil && !errors.Is(serr, server.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("gateway shutdown: %w", err)
	}
	return nil
}

// dialGRPC opens a plaintext gRPC client connection.
func dialGRPC(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// echoMethod is the bare echo's full method name.
const echoMethod = "/tlsgate.bench.Echo/Echo"

// echoDesc is a bare grpc-go unary echo: no interceptors, no work. Its
// messages are SendAsync's, so the comparison with SendAsync is the cost
// of tlsgate's service alone.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "tlsgate.bench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(tlsgatev1.SendAsyncRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			return in, nil
		},
	}},
}

// bareGRPC is the control-plane baseline server.
type bareGRPC struct {
	srv  *grpc.Server
	addr string
	done chan error
	log  *slog.Logger
}

func startBareGRPC(ctx context.Context, log *slog.Logger) (*bareGRPC, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &bareGRPC{srv: grpc.NewServer(), addr: ln.Addr().String(), done: make(chan error, 1), log: log}
	b.srv.RegisterService(&echoDesc, struct{}{})
	go func() { b.done <- b.srv.Serve(ln) }()
	return b, nil
}

func (b *bareGRPC) stop() {
	b.srv.Stop()
	if err := <-b.done; err != nil {
		b.log.Debug("bare gRPC server", "err", err)
	}
}

// echoCall calls the bare echo once.
func echoCall(ctx context.Context, cc *grpc.ClientConn, req *tlsgatev1.SendAsyncRequest) error {
	resp := new(tlsgatev1.SendAsyncRequest)
	return cc.Invoke(ctx, echoMethod, req, resp)
}
