package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// outbound: Data packets pushed through the session queue and written to
// Conns clients, through the Go API (Session.SendAsync, in-process only)
// against the raw loop writing the same frames, and through gRPC SendAsync
// against a bare grpc-go unary echo with as many calls in flight. Each
// pair is measured in interleaved rounds.
func (e *env) outbound(ctx context.Context) error {
	if err := e.outboundQueue(ctx); err != nil {
		return err
	}
	return e.outboundSendAsync(ctx)
}

// outboundQueue: Session.SendAsync against the raw loop.
func (e *env) outboundQueue(ctx context.Context) error {
	size := e.opts.Payloads[0]
	if e.opts.Addr != "" {
		e.log.Warn("outbound: the Go API figure needs the in-process gateway; not measured")
		for range 2 * e.opts.Rounds {
			e.prog.stepDone()
		}
		return nil
	}
	stepGW := fmt.Sprintf("outbound %d B: gateway Go API", size)
	label(stepGW)
	gw, err := startGateway(ctx, e.cert, server.Discard{}, e.log)
	if err != nil {
		return err
	}
	var baseSent, baseGot, gwSent, gwGot uint64
	r, err := e.interleave(ctx, fmt.Sprintf("outbound %d B: raw TLS", size), stepGW,
		func(ctx context.Context, d time.Duration) (float64, error) {
			sent, got, elapsed, err := e.rawOutbound(ctx, size, d)
			baseSent, baseGot = baseSent+sent, baseGot+got
			return float64(got) / elapsed.Seconds(), err
		},
		func(ctx context.Context, d time.Duration) (float64, error) {
			sent, got, elapsed, err := e.outboundGoAPI(ctx, gw, e.opts.Conns, size, d)
			gwSent, gwGot = gwSent+sent, gwGot+got
			return float64(got) / elapsed.Seconds(), err
		})
	if serr := gw.stop(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	e.loss(Loss{Scenario: "outbound", Name: fmt.Sprintf("raw TLS %d B", size), Sent: baseSent, Processed: baseGot, Detail: "counted by the clients"})
	e.loss(Loss{Scenario: "outbound", Name: fmt.Sprintf("gateway Go API %d B", size), Sent: gwSent, Processed: gwGot, Detail: "counted by the clients after Drain with ack"})
	f := r.figure(Figure{Scenario: "outbound", Name: fmt.Sprintf("%d B via session queue (Go API) packets/s", size), Unit: "packets/s", Baseline: "raw TLS loop"}, 1)
	e.figure(f)
	e.target("≥ 0.5 × raw", f.Ratio >= 0.5)
	return nil
}

// rawOutbound is one round of the raw loop writing frames for d to Conns
// clients: how many it claims to have sent (its Flush seq) and how many
// the clients counted, by the time the last Flush arrived.
func (e *env) rawOutbound(ctx context.Context, size int, d time.Duration) (sent, got uint64, elapsed time.Duration, err error) {
	rs, err := startRaw(ctx, e.srvTLS, rawSource, size, d, e.log)
	if err != nil {
		return 0, 0, 0, err
	}
	defer rs.close()
	start := time.Now()
	cs, err := e.dialClients(ctx, rs.addr(), e.opts.Conns, 0, false, true)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, c := range cs {
		seq, err := c.waitFlush(ctx)
		if err != nil {
			closeAll(ctx, cs)
			return 0, 0, 0, fmt.Errorf("raw: %w", err)
		}
		sent += seq
	}
	elapsed = time.Since(start)
	closeAll(ctx, cs)
	for _, c := range cs {
		got += c.data.Load()
	}
	return sent, got, elapsed, nil
}

// outboundGoAPI is one round of pushing packets with Session.SendAsync for
// d to n new sessions, one producer per session, waiting out a full queue with Drain; then
// Drain with ack proves the clients processed everything.
func (e *env) outboundGoAPI(ctx context.Context, gw *target, n, size int, d time.Duration) (total, got uint64, elapsed time.Duration, err error) {
	cs, err := e.dialClients(ctx, gw.addr, n, nextRun(), true, false)
	if err != nil {
		return 0, 0, 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	payload := make([]byte, size)
	start := time.Now()
	deadline := start.Add(d)
	sent := make([]uint64, len(cs))
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			sess, ok := gw.srv.Session(c.id)
			if !ok {
				errs[i] = fmt.Errorf("no session %d", c.id)
				return
			}
			for {
				for range 256 {
					_, err := sess.SendAsync(wire.JSON, payload)
					if errors.Is(err, server.ErrQueueFull) {
						_, err = sess.Drain(wctx, false)
					} else if err == nil {
						sent[i]++
					}
					if err != nil {
						errs[i] = err
						return
					}
				}
				if time.Now().After(deadline) {
					break
				}
			}
			if _, err := sess.Drain(wctx, true); err != nil {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	clean := closeAll(ctx, cs)
	for i, c := range cs {
		total += sent[i]
		got += c.data.Load()
	}
	if err := errors.Join(errs...); err != nil {
		return total, got, elapsed, fmt.Errorf("go API: %w", err)
	}
	if clean != len(cs) {
		return total, got, elapsed, fmt.Errorf("go API: %d of %d closes were not clean", len(cs)-clean, len(cs))
	}
	return total, got, elapsed, nil
}

// outboundSendAsync: gRPC SendAsync on the gateway's sessions against the
// bare echo, both servers up for every round.
func (e *env) outboundSendAsync(ctx context.Context) error {
	size := e.opts.Payloads[0]
	if e.opts.Addr != "" && e.opts.ControlAddr == "" {
		e.log.Warn("outbound: no --control-addr; SendAsync not measured")
		for range 2 * e.opts.Rounds {
			e.prog.stepDone()
		}
		return nil
	}
	stepBase, stepGW := "outbound: bare gRPC echo", fmt.Sprintf("outbound %d B: gateway gRPC SendAsync", size)
	label(stepBase)
	bare, err := startBareGRPC(ctx, e.log)
	if err != nil {
		return err
	}
	defer bare.stop()
	bareCC, err := dialGRPC(bare.addr)
	if err != nil {
		return err
	}
	defer func() { _ = bareCC.Close() }()
	label(stepGW)
	gw, err := e.gatewayFor(ctx, server.Discard{})
	if err != nil {
		return err
	}
	cs, err := e.dialClients(ctx, gw.addr, e.opts.Conns, nextRun(), true, false)
	if err != nil {
		_ = gw.stop()
		return err
	}
	gwCC, err := dialGRPC(gw.ctlAddr)
	if err != nil {
		closeAll(ctx, cs)
		_ = gw.stop()
		return err
	}
	api := tlsgatev1.NewControlServiceClient(gwCC)
	payload := make([]byte, size)
	var accepted uint64
	r, err := e.interleave(ctx, stepBase, stepGW,
		func(ctx context.Context, d time.Duration) (float64, error) {
			n, elapsed, err := e.rpcLoop(ctx, d, func(ctx context.Context, i int) (bool, error) {
				return true, echoCall(ctx, bareCC, &tlsgatev1.SendAsyncRequest{Payload: payload})
			})
			if err != nil {
				return 0, fmt.Errorf("bare gRPC: %w", err)
			}
			return float64(n) / elapsed.Seconds(), nil
		},
		func(ctx context.Context, d time.Duration) (float64, error) {
			n, elapsed, err := e.rpcLoop(ctx, d, func(ctx context.Context, i int) (bool, error) {
				return sendAsync(ctx, api, &tlsgatev1.SendAsyncRequest{SessionId: cs[i%len(cs)].id, Payload: payload})
			})
			accepted += n
			if err != nil {
				return 0, fmt.Errorf("SendAsync: %w", err)
			}
			return float64(n) / elapsed.Seconds(), nil
		})
	if err == nil {
		// Every accepted packet reaches its client: Drain with ack proves
		// the clients processed them.
		dctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err = api.Drain(dctx, &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_AllSessions{AllSessions: true}, Ack: true})
		cancel()
		if err != nil {
			err = fmt.Errorf("SendAsync: final drain: %w", err)
		}
	}
	_ = gwCC.Close()
	clean := closeAll(ctx, cs)
	if serr := gw.stop(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	if clean != len(cs) {
		return fmt.Errorf("SendAsync: %d of %d closes were not clean", len(cs)-clean, len(cs))
	}
	var got uint64
	for _, c := range cs {
		got += c.data.Load()
	}
	e.loss(Loss{Scenario: "outbound", Name: "gateway gRPC SendAsync", Sent: accepted, Processed: got, Detail: "counted by the clients after Drain with ack"})
	f := r.figure(Figure{Scenario: "outbound", Name: fmt.Sprintf("%d B gRPC SendAsync calls/s", size), Unit: "calls/s", Baseline: "bare gRPC unary echo"}, 1)
	e.figure(f)
	e.target("≥ 0.8 × bare", f.Ratio >= 0.8)
	return nil
}

// sendAsync calls SendAsync once; a full queue (RESOURCE_EXHAUSTED) is
// waited out with Drain and reported as not accepted.
func sendAsync(ctx context.Context, api tlsgatev1.ControlServiceClient, req *tlsgatev1.SendAsyncRequest) (accepted bool, err error) {
	_, err = api.SendAsync(ctx, req)
	if status.Code(err) == codes.ResourceExhausted {
		_, err = api.Drain(ctx, &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_SessionId{SessionId: req.SessionId}})
		return false, err
	}
	return err == nil, err
}

// rpcLoop runs RPCConcurrency callers of call for d; caller i passes i.
// It returns the calls that counted (call's ok) and the time taken.
func (e *env) rpcLoop(ctx context.Context, d time.Duration, call func(ctx context.Context, i int) (ok bool, err error)) (uint64, time.Duration, error) {
	wctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	var ok atomic.Uint64
	errs := make([]error, e.opts.RPCConcurrency)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range e.opts.RPCConcurrency {
		wg.Go(func() {
			for n := 0; ; n++ {
				if n%16 == 0 && time.Now().After(deadline) {
					return
				}
				counted, err := call(wctx, i)
				if err != nil {
					errs[i] = err
					return
				}
				if counted {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return ok.Load(), time.Since(start), errors.Join(errs...)
}
