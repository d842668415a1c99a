package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// connections: K idle sessions opened by a separate client process (this
// program re-executed), DialConcurrency handshakes at a time. Reports
// handshakes/s and this process's RSS and live heap per idle session,
// against a raw TLS server holding the raw loop's per-connection state
// (and, for reference, a bare one). Then every session is closed at once:
// the in-process gateway queues one packet to each and closes them all in
// parallel, gracefully; every packet must arrive and every close be clean.
func (e *env) connections(ctx context.Context) error {
	if len(e.opts.ChildArgv) == 0 {
		return errors.New("connections needs a client process (Options.ChildArgv)")
	}
	for _, k := range e.opts.Sessions {
		type measured struct {
			handshakes float64
			rss, heap  float64 // bytes per connection
		}
		var raw, bare measured
		for _, mode := range []rawMode{rawIdle, rawIdleBare} {
			name := "raw TLS"
			if mode == rawIdleBare {
				name = "bare raw TLS"
			}
			e.prog.step(fmt.Sprintf("connections %d: %s", k, name))
			m0 := measureMemory()
			rs, err := startRaw(ctx, e.srvTLS, mode, 0, 0, e.log)
			if err != nil {
				return err
			}
			ch, rep, err := e.startChild(ctx, childConfig{Addr: rs.addr(), Conns: k, Concurrency: e.opts.DialConcurrency})
			if err != nil {
				rs.close()
				return fmt.Errorf("%s: %w", name, err)
			}
			m1 := measureMemory()
			m := measured{
				handshakes: float64(k) / time.Duration(rep.ElapsedNS).Seconds(),
				rss:        perConn(m1.rss, m0.rss, k),
				heap:       perConn(m1.heap, m0.heap, k),
			}
			_, err = ch.command("close")
			rs.close()
			if werr := ch.wait(); err == nil {
				err = werr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if mode == rawIdle {
				raw = m
			} else {
				bare = m
			}
			e.prog.stepDone()
		}

		e.prog.step(fmt.Sprintf("connections %d: gateway", k))
		m0 := measureMemory()
		gw, err := e.gatewayFor(ctx, server.Discard{})
		if err != nil {
			return err
		}
		run := nextRun()
		ch, rep, err := e.startChild(ctx, childConfig{Addr: gw.addr, Conns: k, Concurrency: e.opts.DialConcurrency, Gateway: true, Run: run})
		if err != nil {
			_ = gw.stop()
			return fmt.Errorf("gateway: %w", err)
		}
		hs := rounds{base: []float64{raw.handshakes}, gw: []float64{float64(k) / time.Duration(rep.ElapsedNS).Seconds()}}
		var later []Figure // after the handshake figure, which waits for the extra rounds
		if gw.inProcess() {
			if n := len(gw.srv.Sessions()); n != k {
				_ = gw.stop()
				return fmt.Errorf("gateway holds %d sessions, want %d", n, k)
			}
			m1 := measureMemory()
			rss, heap := perConn(m1.rss, m0.rss, k), perConn(m1.heap, m0.heap, k)
			met := rss <= 1.5*raw.rss
			later = append(later,
				Figure{Scenario: "connections", Name: fmt.Sprintf("%d sessions: RSS per idle session", k), Unit: "KiB", Value: rss / 1024, Baseline: "raw TLS, 2×64 KiB buffers", BaselineValue: raw.rss / 1024, Target: "≤ 1.5 × raw", Met: &met},
				Figure{Scenario: "connections", Name: fmt.Sprintf("%d sessions: RSS per idle session", k), Unit: "KiB", Value: rss / 1024, Baseline: "bare raw TLS, no buffers", BaselineValue: bare.rss / 1024},
				Figure{Scenario: "connections", Name: fmt.Sprintf("%d sessions: heap per idle session", k), Unit: "KiB", Value: heap / 1024, Baseline: "raw TLS, 2×64 KiB buffers", BaselineValue: raw.heap / 1024})
			// The same sessions after a burst each way: what traffic
			// leaves behind in an idle session.
			if err = e.burstBoth(ctx, gw, ch); err == nil {
				m2 := measureMemory()
				rss2, heap2 := perConn(m2.rss, m0.rss, k), perConn(m2.heap, m0.heap, k)
				met := rss2 <= 1.3*rss
				name := fmt.Sprintf("%d sessions: %%s per idle session after a burst (%d KiB each way)", k, burstPackets*burstSize>>10)
				later = append(later,
					Figure{Scenario: "connections", Name: fmt.Sprintf(name, "RSS"), Unit: "KiB", Value: rss2 / 1024, Baseline: "the same sessions before it", BaselineValue: rss / 1024, Target: "≤ 1.3 × before", Met: &met},
					Figure{Scenario: "connections", Name: fmt.Sprintf(name, "heap"), Unit: "KiB", Value: heap2 / 1024, Baseline: "the same sessions before it", BaselineValue: heap / 1024})
				err = e.closeAllAtOnce(ctx, gw, ch, k, burstPackets)
			}
		} else {
			var fin childReport
			fin, err = ch.command("close")
			if err == nil {
				e.loss(Loss{Scenario: "connections", Name: fmt.Sprintf("%d sessions closing at once (client-initiated)", k), Sent: uint64(k), Processed: uint64(fin.Clean), Detail: "one packet per session, proved by a clean Goodbye exchange"})
				later = append(later, Figure{Scenario: "connections", Name: fmt.Sprintf("%d sessions: close all at once (client-initiated)", k), Unit: "ms", Value: ms(time.Duration(fin.CloseNS))})
			}
		}
		if werr := ch.wait(); err == nil {
			err = werr
		}
		if serr := gw.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		e.prog.stepDone()

		if k <= handshakeRoundsMax {
			more, err := e.interleaveRounds(ctx, 1, fmt.Sprintf("connections %d: raw TLS", k), fmt.Sprintf("connections %d: gateway", k),
				func(ctx context.Context, _ time.Duration) (float64, error) { return e.handshakeRound(ctx, k, false) },
				func(ctx context.Context, _ time.Duration) (float64, error) { return e.handshakeRound(ctx, k, true) })
			if err != nil {
				return err
			}
			hs.base, hs.gw = append(hs.base, more.base...), append(hs.gw, more.gw...)
		}
		f := hs.figure(Figure{Scenario: "connections", Name: fmt.Sprintf("%d sessions: handshakes/s (with Ed25519)", k), Unit: "handshakes/s", Baseline: "raw TLS handshakes"}, 1)
		e.figure(f)
		e.target("≥ 0.8 × raw", f.Ratio >= 0.8)
		for _, f := range later {
			e.figure(f)
		}
	}
	return nil
}

// handshakeRoundsMax: session counts up to this one measure handshakes/s in
// --rounds interleaved rounds (the first being the one that also measures
// memory); their handshakes last under a second, where one measurement is
// at the mercy of the machine's load. Larger counts take seconds, which
// averages the noise out, and one round each.
const handshakeRoundsMax = 2000

// handshakeRound is one more handshakes/s sample: k sessions opened by a
// client process to a fresh raw loop or gateway, then closed by the
// clients.
func (e *env) handshakeRound(ctx context.Context, k int, gateway bool) (float64, error) {
	cfg := childConfig{Conns: k, Concurrency: e.opts.DialConcurrency, Gateway: gateway}
	var stop func() error
	if gateway {
		gw, err := e.gatewayFor(ctx, server.Discard{})
		if err != nil {
			return 0, err
		}
		cfg.Addr, cfg.Run, stop = gw.addr, nextRun(), gw.stop
	} else {
		rs, err := startRaw(ctx, e.srvTLS, rawIdle, 0, 0, e.log)
		if err != nil {
			return 0, err
		}
		cfg.Addr, stop = rs.addr(), func() error { rs.close(); return nil }
	}
	ch, rep, err := e.startChild(ctx, cfg)
	if err != nil {
		_ = stop()
		return 0, err
	}
	fin, err := ch.command("close")
	if werr := ch.wait(); err == nil {
		err = werr
	}
	if serr := stop(); err == nil {
		err = serr
	}
	if err == nil && gateway && fin.Clean != k {
		err = fmt.Errorf("%d of %d closes were not clean", k-fin.Clean, k)
	}
	return float64(k) / time.Duration(rep.ElapsedNS).Seconds(), err
}

// closeAllAtOnce queues one packet to each of the k sessions, then closes
// them all in parallel through Session.Close (graceful, server-initiated).
// Every packet must reach its client, every client's packet the handler,
// and every close must be clean.
func (e *env) closeAllAtOnce(ctx context.Context, gw *target, ch *child, k, burst int) error {
	sessions := gw.srv.Sessions()
	payload := []byte(`"bye"`)
	for _, s := range sessions {
		if _, err := s.SendAsync(wire.JSON, payload); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	infos := make([]server.CloseInfo, len(sessions))
	errs := make([]error, len(sessions))
	for i, s := range sessions {
		wg.Go(func() {
			infos[i], errs[i] = s.Close(cctx, server.CloseOptions{Code: wire.GoodbyeServerShutdown, Reason: "bench"})
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	clean := 0
	for _, info := range infos {
		if info.Outcome == server.OutcomeClean {
			clean++
		}
	}
	fin, err := ch.command("wait")
	if err != nil {
		return err
	}
	e.figure(Figure{Scenario: "connections", Name: fmt.Sprintf("%d sessions: close all at once (server-initiated, graceful)", k), Unit: "ms", Value: ms(elapsed)})
	e.loss(Loss{Scenario: "connections", Name: fmt.Sprintf("%d sessions closing at once: server to clients", k), Sent: uint64(k), Processed: fin.Data - uint64(k*burst), Detail: "one packet queued per session, counted by the client process (beyond the burst's)"})
	e.loss(Loss{Scenario: "connections", Name: fmt.Sprintf("%d sessions closing at once: clients to server", k), Sent: uint64(k), Processed: gw.handled.n.load() - uint64(k*burst), Detail: "one packet per session, counted by the handler (beyond the burst's)"})
	e.loss(Loss{Scenario: "connections", Name: fmt.Sprintf("%d sessions closing at once: clean closes", k), Sent: uint64(k), Processed: uint64(min(clean, fin.Clean)), Detail: "outcome clean on both sides"})
	return nil
}

func perConn(after, before uint64, k int) float64 {
	return (float64(after) - float64(before)) / float64(k)
}

// child is the connections scenario's client process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	dec    *json.Decoder
	stderr *bytes.Buffer
}

// startChild starts the client process and waits for its connections.
func (e *env) startChild(ctx context.Context, cfg childConfig) (*child, childReport, error) {
	argv := e.opts.ChildArgv
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	ch := &child{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = ch.stderr
	var err error
	if ch.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, childReport{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, childReport{}, err
	}
	ch.dec = json.NewDecoder(out)
	if err := cmd.Start(); err != nil {
		return nil, childReport{}, err
	}
	if err := json.NewEncoder(ch.stdin).Encode(cfg); err != nil {
		_ = ch.wait()
		return nil, childReport{}, err
	}
	var rep childReport
	if err := ch.dec.Decode(&rep); err != nil {
		werr := ch.wait()
		return nil, rep, fmt.Errorf("client process: %w (%v)", err, werr)
	}
	if rep.Err != "" || rep.Established != cfg.Conns {
		_ = ch.stdin.Close()
		_ = ch.wait()
		return nil, rep, fmt.Errorf("client process established %d of %d connections: %s", rep.Established, cfg.Conns, rep.Err)
	}
	return ch, rep, nil
}

// command tells the child to close its connections, or to wait for the
// server to, and returns its final report.
func (ch *child) command(cmd string) (childReport, error) {
	return ch.send(childCommand{Cmd: cmd})
}

// send writes cmd to the child and returns its report.
func (ch *child) send(cmd childCommand) (childReport, error) {
	var rep childReport
	if err := json.NewEncoder(ch.stdin).Encode(cmd); err != nil {
		return rep, err
	}
	if err := ch.dec.Decode(&rep); err != nil {
		return rep, fmt.Errorf("client process: %w", err)
	}
	return rep, nil
}

// wait ends the child's input and waits for it to exit.
func (ch *child) wait() error {
	_ = ch.stdin.Close()
	if err := ch.cmd.Wait(); err != nil {
		return fmt.Errorf("client process: %w; stderr: %s", err, ch.stderr.String())
	}
	return nil
}

// The connections scenario's burst: burstPackets Data packets of burstSize
// bytes each way on every session.
const burstPackets, burstSize = 16, 1 << 10

// burstBoth runs the burst: the client process sends its packets (and has
// each session's Flush answered: the handler processed them) while the
// gateway queues its own to every session and drains them with ack (the
// client process read them).
func (e *env) burstBoth(ctx context.Context, gw *target, ch *child) error {
	inbound := make(chan error, 1)
	go func() {
		rep, err := ch.send(childCommand{Cmd: "burst", Packets: burstPackets, Size: burstSize})
		if err == nil && rep.Err != "" {
			err = fmt.Errorf("client process burst: %s", rep.Err)
		}
		inbound <- err
	}()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	payload := make([]byte, burstSize)
	sessions := gw.srv.Sessions()
	errs := make([]error, len(sessions))
	sem := make(chan struct{}, max(1, e.opts.DialConcurrency))
	var wg sync.WaitGroup
	for i, s := range sessions {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for range burstPackets {
				if _, errs[i] = s.SendWait(ctx, wire.JSON, payload); errs[i] != nil {
					return
				}
			}
			_, errs[i] = s.Drain(ctx, true)
		})
	}
	wg.Wait()
	return errors.Join(append(errs, <-inbound)...)
}
