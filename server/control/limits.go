package control

import (
	"fmt"
	"math"
	"net"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// The control plane's transport limits: what one client, authenticated or
// not, can make the server hold. grpc-go's defaults are made for trusted
// peers (16 MiB of headers per call, decoded before any interceptor, the
// token check included, runs).
const (
	// DefaultMaxHeaderBytes is Config.MaxHeaderBytes when it is zero: the
	// largest header list (metadata) of one call, as HTTP/2 counts it.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultMaxCallsPerConn is Config.MaxCallsPerConn when it is zero:
	// the calls one connection may have open at once (HTTP/2
	// SETTINGS_MAX_CONCURRENT_STREAMS).
	DefaultMaxCallsPerConn = 1000
	// DefaultMaxConns is Config.MaxConns when it is zero: the control-plane
	// connections served at once; more wait to be accepted.
	DefaultMaxConns = 1000
	// DefaultKeepaliveMinTime is Config.KeepaliveMinTime when it is zero:
	// a client that pings more often than this is sent GOAWAY
	// (too_many_pings).
	DefaultKeepaliveMinTime = 10 * time.Second
	// KeepaliveTime and KeepaliveTimeout: the server pings a connection
	// idle this long and closes it when the ping is not answered in time,
	// so that a backend that vanished (its Consume streams' unacked
	// packets waiting for redelivery) is noticed within about a minute and
	// a half, not the kernel's two hours.
	KeepaliveTime    = time.Minute
	KeepaliveTimeout = 20 * time.Second
)

// limitDefaults fills in the zero limits of c and checks the others.
func (c *Config) limitDefaults() error {
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"MaxHeaderBytes", &c.MaxHeaderBytes, DefaultMaxHeaderBytes},
		{"MaxCallsPerConn", &c.MaxCallsPerConn, DefaultMaxCallsPerConn},
		{"MaxConns", &c.MaxConns, DefaultMaxConns},
		{"MaxStreams", &c.MaxStreams, DefaultMaxStreams},
	} {
		if *f.v < 0 || *f.v > math.MaxInt32 {
			return fmt.Errorf("control: Config.%s must be between 0 and %d, got %d", f.name, math.MaxInt32, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if c.KeepaliveMinTime < 0 {
		return fmt.Errorf("control: Config.KeepaliveMinTime must not be negative, got %s", c.KeepaliveMinTime)
	}
	if c.KeepaliveMinTime == 0 {
		c.KeepaliveMinTime = DefaultKeepaliveMinTime
	}
	return nil
}

// transportOptions are the gRPC server options of c's limits.
func (c *Config) transportOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxHeaderListSize(uint32(c.MaxHeaderBytes)),
		grpc.MaxConcurrentStreams(uint32(c.MaxCallsPerConn)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: c.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}),
	}
}

// limitListener serves at most c.MaxConns connections of ln at once.
func (c *Config) limitListener(ln net.Listener) net.Listener {
	return netutil.LimitListener(ln, c.MaxConns)
}
