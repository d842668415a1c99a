package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// closeScenario times the control plane's graceful Drain (with and without
// ack) and Disconnect, on sessions with an empty queue and with
// QueuedPackets just queued, against a bare grpc-go unary echo. Each case
// takes Samples operations, one at a time, each right after one bare echo
// call: the case's baseline is those calls, so that a disturbance of the
// machine lands on both sides alike.
func (e *env) closeScenario(ctx context.Context) error {
	if e.opts.Addr != "" && e.opts.ControlAddr == "" {
		return errors.New("close needs --control-addr with --addr")
	}
	e.prog.step("close: bare gRPC unary")
	bare, err := startBareGRPC(ctx, e.log)
	if err != nil {
		return err
	}
	defer bare.stop()
	bareCall, closeBare, err := e.bareCaller(ctx, bare.addr)
	if err != nil {
		return fmt.Errorf("bare gRPC: %w", err)
	}
	defer closeBare()
	e.prog.stepDone()

	label("close: gateway")
	gw, err := e.gatewayFor(ctx, server.Discard{})
	if err != nil {
		return err
	}
	err = e.closeCases(ctx, gw, bareCall)
	if serr := gw.stop(); err == nil {
		err = serr
	}
	return err
}

// bareCaller connects to the bare echo, warms the connection up, and
// returns a function that times one call.
func (e *env) bareCaller(ctx context.Context, addr string) (call func(context.Context) (time.Duration, error), closeConn func(), err error) {
	cc, err := dialGRPC(addr)
	if err != nil {
		return nil, nil, err
	}
	req := &tlsgatev1.SendAsyncRequest{Payload: make([]byte, 64)}
	call = func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		err := echoCall(ctx, cc, req)
		return time.Since(t), err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for range 100 {
		if _, err := call(cctx); err != nil {
			_ = cc.Close()
			return nil, nil, err
		}
	}
	return call, func() { _ = cc.Close() }, nil
}

func (e *env) closeCases(ctx context.Context, gw *target, bareCall func(context.Context) (time.Duration, error)) error {
	cc, err := dialGRPC(gw.ctlAddr)
	if err != nil {
		return err
	}
	defer func() { _ = cc.Close() }()
	api := tlsgatev1.NewControlServiceClient(cc)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	payload := make([]byte, e.opts.Payloads[0])
	var queued uint64
	// enqueue queues n packets for a session: through the Go API when the
	// gateway is in-process (so the queue is deep when the call starts),
	// else through SendAsync.
	enqueue := func(id uint64, n int) error {
		var sess *server.Session
		if gw.inProcess() {
			var ok bool
			if sess, ok = gw.srv.Session(id); !ok {
				return fmt.Errorf("no session %d", id)
			}
		}
		for range n {
			var err error
			if sess != nil {
				_, err = sess.SendAsync(wire.JSON, payload)
			} else {
				_, err = api.SendAsync(cctx, &tlsgatev1.SendAsyncRequest{SessionId: id, Payload: payload})
			}
			if err != nil {
				return err
			}
			queued++
		}
		return nil
	}
	report := func(name string, l, base latencies) {
		for _, q := range []struct {
			name      string
			v, b      time.Duration
			isP99     bool
			isDrainNo bool
		}{{"p50", l.p50, base.p50, false, false}, {"p99", l.p99, base.p99, true, false}, {"max", l.max, base.max, false, false}} {
			e.figure(Figure{Scenario: "close", Name: name + " " + q.name, Unit: "ms", Value: ms(q.v), Baseline: "bare gRPC unary", BaselineValue: ms(q.b)})
			if q.isP99 && name == "Disconnect, empty queue" {
				e.target("p99 ≤ 2 ms", l.p99 <= 2*time.Millisecond)
			}
			if q.isP99 && name == "Drain without ack, empty queue" {
				e.target("p99 ≤ 2 × bare", l.p99 <= 2*base.p99)
			}
		}
	}

	run := nextRun()
	cs, err := e.dialClients(cctx, gw.addr, 1+2*e.opts.Samples, run, true, false)
	if err != nil {
		return err
	}
	defer closeAll(ctx, cs)
	drained := cs[0]
	for _, ack := range []bool{false, true} {
		for _, depth := range []int{0, e.opts.QueuedPackets} {
			name := caseName("Drain", ack, depth)
			e.prog.step("close: " + name)
			d, bd := make([]time.Duration, e.opts.Samples), make([]time.Duration, e.opts.Samples)
			for i := range d {
				if bd[i], err = bareCall(cctx); err != nil { // before the enqueue: its writes would slow the echo
					return fmt.Errorf("bare gRPC: %w", err)
				}
				if err := enqueue(drained.id, depth); err != nil {
					return fmt.Errorf("%s: enqueue: %w", name, err)
				}
				t := time.Now()
				resp, err := api.Drain(cctx, &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_SessionId{SessionId: drained.id}, Ack: ack})
				d[i] = time.Since(t)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				if s := resp.GetSessions(); len(s) != 1 || s[0].GetFlushedSeq() < s[0].GetTargetSeq() || s[0].GetAcknowledged() != ack {
					return fmt.Errorf("%s: incomplete drain %v", name, resp)
				}
			}
			report(name, summarize(d), summarize(bd))
			e.prog.stepDone()
		}
	}
	for j, depth := range []int{0, e.opts.QueuedPackets} {
		name := caseName("Disconnect", false, depth)
		e.prog.step("close: " + name)
		d, bd := make([]time.Duration, e.opts.Samples), make([]time.Duration, e.opts.Samples)
		for i := range d {
			c := cs[1+j*e.opts.Samples+i]
			if bd[i], err = bareCall(cctx); err != nil {
				return fmt.Errorf("bare gRPC: %w", err)
			}
			if err := enqueue(c.id, depth); err != nil {
				return fmt.Errorf("%s: enqueue: %w", name, err)
			}
			t := time.Now()
			resp, err := api.Disconnect(cctx, &tlsgatev1.DisconnectRequest{SessionId: c.id, Code: wire.GoodbyeNormal, Reason: "bench"})
			d[i] = time.Since(t)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if o := resp.GetConnection().GetOutcome(); o != tlsgatev1.Outcome_OUTCOME_CLEAN {
				return fmt.Errorf("%s: outcome %s, want clean", name, o)
			}
			if r := c.wait(cctx); !r.clean() {
				return fmt.Errorf("%s: the client saw an unclean close: %v", name, r.err)
			}
		}
		report(name, summarize(d), summarize(bd))
		e.prog.stepDone()
	}
	// Every packet queued went to a client before its Drain or Disconnect
	// returned.
	var got uint64
	for _, c := range cs {
		got += c.data.Load()
	}
	e.loss(Loss{Scenario: "close", Name: "queued before Drain and Disconnect", Sent: queued, Processed: got, Detail: "counted by the clients"})
	return nil
}

func caseName(op string, ack bool, depth int) string {
	s := op
	if op == "Drain" {
		if ack {
			s += " with ack"
		} else {
			s += " without ack"
		}
	}
	if depth == 0 {
		return s + ", empty queue"
	}
	return fmt.Sprintf("%s, %d-packet queue", s, depth)
}
