package loadgen

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/gateway"
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

// target is the gateway under test: in-process (gw set), assembled as
// `tlsgate serve` assembles it (the control hub in front of a counting
// fallback handler) but without the admin endpoint and its metrics, or a
// running one reached at addr and ctlAddr.
type target struct {
	gw      *gateway.Gateway
	srv     *server.Server   // gw's data plane
	handled *countingHandler // in-process only
	addr    string
	ctlAddr string
	served  chan error
	stopped sync.Once
	stopErr error
}

func (g *target) inProcess() bool { return g.gw != nil }

// startGateway runs a gateway and its control plane on loopback ports.
func startGateway(ctx context.Context, cert tls.Certificate, fallback server.Handler, log *slog.Logger) (*target, error) {
	return startGatewayWith(ctx, cert, fallback, log, func(*gateway.Config) {})
}

// startGatewayWith is startGateway with edit applied to the defaults.
func startGatewayWith(ctx context.Context, cert tls.Certificate, fallback server.Handler, log *slog.Logger, edit func(*gateway.Config)) (*target, error) {
	g := &target{handled: &countingHandler{next: fallback}, served: make(chan error, 1)}
	cfg := gateway.DefaultConfig()
	edit(&cfg)
	cfg.Server.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	cfg.Server.Handler = g.handled
	cfg.Addr, cfg.ControlAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.Logger = log
	var err error
	if g.gw, err = gateway.New(cfg); err != nil {
		return nil, err
	}
	g.srv, g.addr, g.ctlAddr = g.gw.Server(), g.gw.Addr().String(), g.gw.ControlAddr().String()
	go func() { g.served <- g.gw.Serve(context.WithoutCancel(ctx)) }()
	select {
	case <-g.gw.Ready():
		return g, nil
	case err := <-g.served:
		return nil, err
	}
}

// stop shuts an in-process gateway down as serve does; it reports a
// shutdown that had to force connections closed. Later calls return the
// first one's result.
func (g *target) stop() error {
	if g.gw == nil {
		return nil
	}
	g.stopped.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := g.gw.Shutdown(ctx)
		if serr := <-g.served; err == nil {
			err = serr
		}
		if err != nil {
			g.stopErr = fmt.Errorf("gateway shutdown: %w", err)
		}
	})
	return g.stopErr
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
