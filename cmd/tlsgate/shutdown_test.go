package main

// Shutdown under load: SIGTERM to the real binary while 1,000 sessions of
// the Go client library send and receive echoes.

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/wire"
)

// loadedSession is one client of the load: a sender keeps up to window
// numbered packets unechoed; a receiver checks that the echoes come back
// in order.
type loadedSession struct {
	conn     *client.Conn
	sent     int // packets written (Send returned nil); valid once done
	echoed   int // echoes received, in order; valid once done
	sendErr  error
	recvErr  error
	badEcho  string
	firstTwo chan struct{} // closed at the second echo: the session is under load
	done     chan struct{} // closed when both goroutines have ended
}

func (s *loadedSession) run(window int, pace time.Duration) {
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(pace)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case sem <- struct{}{}:
			case <-s.conn.Done():
				return
			}
			select {
			case <-tick.C:
			case <-s.conn.Done():
				return
			}
			if err := s.conn.Send(context.Background(), client.Data(strconv.AppendInt(nil, int64(i), 10))); err != nil {
				s.sendErr = err
				return
			}
			s.sent++
		}
	})
	wg.Go(func() {
		for {
			p, err := s.conn.Recv(context.Background())
			if err != nil {
				s.recvErr = err
				return
			}
			if want := strconv.Itoa(s.echoed); p.Type != wire.TypeData || string(p.Payload) != want {
				s.badEcho = p.Type.String() + " " + strconv.Quote(string(p.Payload)) + ", want " + want
				return
			}
			if s.echoed++; s.echoed == 2 {
				close(s.firstTwo)
			}
			<-sem
		}
	})
	wg.Wait()
	close(s.done)
}

// raiseFileLimit raises the soft limit on open files towards need (the
// child processes inherit it) and returns the limit in force.
func raiseFileLimit(t *testing.T, need uint64) uint64 {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < need {
		lim.Cur = min(need, lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	return lim.Cur
}

// TestShutdownUnderLoad: serve gets SIGTERM while 1,000 sessions send and
// receive echoes (a window of 8 each). In order:
//  1. health goes NOT_SERVING (seen on a health Watch; and when the data
//     listener is first found closed, health already says NOT_SERVING);
//  2. the data listener stops: new connections are refused;
//  3. every session's client gets its echoes, in order, gapless, then
//     Goodbye server_shutdown, and the exchange is clean; the server's
//     closed events account for every packet: each one the client wrote
//     was read, and echoed unless the echo came after the Goodbye (then
//     counted as a reply dropped); nothing queued went unwritten;
//  4. the control plane stops gracefully after the sessions: WatchSessions
//     delivers every closed event, then ends with UNAVAILABLE;
//  5. the process exits 0 within the shutdown timeout.
func TestShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	// Each session sends a packet every pace, with up to window unechoed.
	const shutdownTimeout, window, pace = 60 * time.Second, 8, 20 * time.Millisecond
	sessions := 1000
	if lim := raiseFileLimit(t, 4*uint64(sessions)+256); lim < 4*uint64(sessions)+256 {
		sessions = int(lim-256) / 4
		t.Logf("open files limited to %d: %d sessions", lim, sessions)
	}
	// Long handshake, drain and linger timeouts: they guard liveness only,
	// and on a busy machine 1,000 handshakes, or 1,000 clients answering
	// the Goodbye, can take seconds (once: 17 s to connect them, and a
	// default 2 s linger closed dozens of sessions before their clients
	// answered). Drain plus linger fit in the shutdown timeout.
	srv := startServe(t, "--dev-dir", t.TempDir(), "--shutdown-timeout", shutdownTimeout.String(),
		"--handshake-timeout", "30s", "--drain-timeout", "25s", "--linger-timeout", "25s")

	cc, err := grpc.NewClient(srv.controlAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	healthCtx, stopHealth := context.WithCancel(t.Context())
	defer stopHealth()
	health, err := healthpb.NewHealthClient(cc).Watch(healthCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := health.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch: %v, %v; want SERVING", st, err)
	}
	watch, err := tlsgatev1.NewControlServiceClient(cc).WatchSessions(t.Context(), &tlsgatev1.WatchSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Header(); err != nil {
		t.Fatal(err)
	}
	closedEvents := make(map[uint64]*tlsgatev1.ClosedConnection)
	var watchErr error
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			ev, err := watch.Recv()
			if err != nil {
				watchErr = err
				return
			}
			if c := ev.GetClosed(); c != nil {
				closedEvents[c.GetSessionId()] = c
			}
		}
	}()

	// The load: dial every session, then every session streams.
	start := time.Now()
	load := make([]*loadedSession, sessions)
	t.Cleanup(func() { // after a failure, end the sessions at once
		select {
		case <-srv.exited:
		default:
			_ = srv.cmd.Process.Kill()
		}
		for _, s := range load {
			if s != nil {
				<-s.done
			}
		}
	})
	var dialing sync.WaitGroup
	var next atomic.Int64
	dialErrs := make(chan error, sessions)
	for range 8 {
		dialing.Go(func() {
			for i := int(next.Add(1)) - 1; i < sessions; i = int(next.Add(1)) - 1 {
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				conn, err := client.Dial(ctx, srv.addr, faultKey(t), client.WithFingerprint(srv.fingerprint))
				cancel()
				if err != nil {
					dialErrs <- err
					return
				}
				load[i] = &loadedSession{conn: conn, firstTwo: make(chan struct{}), done: make(chan struct{})}
			}
		})
	}
	dialing.Wait()
	close(dialErrs)
	for _, s := range load {
		if s != nil {
			go s.run(window, pace)
		}
	}
	for err := range dialErrs {
		t.Fatalf("dial: %v", err)
	}
	dialed := time.Since(start)
	for i, s := range load {
		select {
		case <-s.firstTwo:
		case <-s.done:
			t.Fatalf("session %d ended before the shutdown: send %v, recv %v, %s", i, s.sendErr, s.recvErr, s.badEcho)
		case <-time.After(waitFor):
			t.Fatalf("session %d: no echoes within %s", i, waitFor)
		}
	}
	t.Logf("%d sessions connected in %s, streaming after %s", sessions, dialed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// The prober dials the data listener every 5 ms until it is refused,
	// and then asks health at once.
	type probe struct {
		refusedAt time.Time
		health    healthpb.HealthCheckResponse_ServingStatus
		err       error
	}
	probed := make(chan probe, 1)
	accepting, quit := make(chan struct{}), make(chan struct{})
	signalled := make(chan struct{}) // closed once SIGTERM is sent
	t.Cleanup(func() { close(quit) })
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var deadline <-chan time.Time // the shutdown timeout, from SIGTERM
		sig := signalled
		first := true
		for {
			select {
			case <-tick.C:
			case <-sig:
				deadline, sig = time.After(shutdownTimeout), nil
				continue
			case <-deadline:
				probed <- probe{err: errors.New("the data listener never stopped accepting")}
				return
			case <-quit:
				return
			}
			nc, err := net.DialTimeout("tcp", srv.addr, waitFor) // slow is not refused: a busy machine schedules late
			switch {
			case err == nil:
				_ = nc.Close()
				if first {
					first = false
					close(accepting)
				}
				continue
			case !errors.Is(err, syscall.ECONNREFUSED):
				continue // a busy machine, say: the listener is not known closed
			}
			p := probe{refusedAt: time.Now()}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			p.health, p.err = resp.GetStatus(), err
			if first {
				p.err = errors.New("the data listener refused connections before SIGTERM")
			}
			probed <- p
			return
		}
	}()
	select {
	case <-accepting:
	case p := <-probed:
		t.Fatalf("prober: %v", p.err)
	case <-time.After(waitFor):
		t.Fatalf("the data listener accepted no connection within %s", waitFor)
	}

	sigterm := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	close(signalled)
	// 1. health NOT_SERVING; then the health Watch is ended, so that the
	// graceful stop of the gRPC server does not wait for it.
	healthNext := make(chan error, 1)
	go func() {
		st, err := health.Recv()
		if err == nil && st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			err = errors.New("status " + st.GetStatus().String())
		}
		healthNext <- err
	}()
	select {
	case err := <-healthNext:
		if err != nil {
			t.Fatalf("health Watch after SIGTERM: %v; want NOT_SERVING", err)
		}
	case <-time.After(waitFor):
		t.Fatalf("health Watch: nothing within %s of SIGTERM", waitFor)
	}
	notServing := time.Since(sigterm)
	stopHealth()
	// 2. the listener stops, after health: once it refuses, health is no
	// longer SERVING. serve stops the control plane right after the
	// sessions, so with a quick drain the check may find it gone
	// (UNAVAILABLE, connection refused): that is after NOT_SERVING too.
	p := <-probed
	controlGone := status.Code(p.err) == codes.Unavailable && strings.Contains(p.err.Error(), "connection refused")
	if (p.err != nil && !controlGone) || (p.err == nil && p.health != healthpb.HealthCheckResponse_NOT_SERVING) {
		t.Errorf("when the data listener was found closed: health %s, err %v; want NOT_SERVING already", p.health, p.err)
	}
	// 3. every session: its echoes, then Goodbye server_shutdown.
	for i, s := range load {
		select {
		case <-s.done:
		case <-time.After(shutdownTimeout):
			t.Fatalf("session %d still running %s after SIGTERM", i, shutdownTimeout)
		}
		var ce *client.CloseError
		switch {
		case s.badEcho != "":
			t.Errorf("session %d: echo %d is %s", i, s.echoed, s.badEcho)
		case !errors.Is(s.recvErr, client.ErrClosed) || !errors.As(s.recvErr, &ce):
			t.Errorf("session %d: Recv ended with %v, want the end of the connection", i, s.recvErr)
		case ce.Code != wire.GoodbyeServerShutdown || !ce.Reconnect || ce.Initiator != client.InitiatorRemote || ce.Outcome != client.OutcomeClean:
			t.Errorf("session %d ended with %v, want a clean Goodbye server_shutdown", i, ce)
		case s.sendErr != nil && !errors.Is(s.sendErr, client.ErrGoodbyeReceived) && !errors.Is(s.sendErr, client.ErrClosed):
			t.Errorf("session %d: a send failed with %v", i, s.sendErr)
		case s.echoed > s.sent || s.sent-s.echoed > window:
			t.Errorf("session %d: %d sent, %d echoed", i, s.sent, s.echoed)
		}
	}
	// 5. the process exits 0 within the shutdown timeout.
	select {
	case <-srv.exited:
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("serve still running %s after SIGTERM", shutdownTimeout+5*time.Second)
	}
	exited := time.Since(sigterm)
	if code := srv.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("serve exited %d, want 0", code)
	}
	if exited > shutdownTimeout {
		t.Errorf("serve exited %s after SIGTERM, past the shutdown timeout of %s", exited, shutdownTimeout)
	}
	if containsLine(srv.stderr, "shutdown timeout expired") {
		t.Error("the shutdown timeout expired: connections were forced")
	}
	// 4. the control plane stopped after the sessions, gracefully.
	select {
	case <-watchDone:
	case <-time.After(waitFor):
		t.Fatalf("WatchSessions still open %s after serve exited", waitFor)
	}
	if status.Code(watchErr) != codes.Unavailable || status.Convert(watchErr).Message() != "server shutting down" {
		t.Errorf("WatchSessions ended with %v, want UNAVAILABLE server shutting down", watchErr)
	}
	accounted := 0
	for i, s := range load {
		c, ok := closedEvents[s.conn.ID()]
		switch {
		case !ok:
			t.Errorf("session %d: no closed event", i)
			continue
		case c.GetOutcome() != tlsgatev1.Outcome_OUTCOME_CLEAN || c.GetGoodbyeCode() != wire.GoodbyeServerShutdown || c.GetPeerGoodbyeCode() != wire.GoodbyeNormal:
			t.Errorf("session %d closed %v, want clean, server_shutdown answered with normal", i, c)
			continue
		}
		n := c.GetCounters()
		// In: every packet written, and the Goodbye. Out: the echoes
		// received, and the Goodbye. The rest of the packets in were
		// processed after the server's Goodbye: their echoes dropped.
		if n.GetPacketsIn() != uint64(s.sent)+1 || n.GetPacketsOut() != uint64(s.echoed)+1 ||
			n.GetRepliesDropped() != uint64(s.sent-s.echoed) || n.GetUnwritten() != 0 || n.GetDiscarded() != 0 {
			t.Errorf("session %d: client sent %d, received %d echoes; server counted %v", i, s.sent, s.echoed, n)
			continue
		}
		accounted++
	}
	total := 0
	for _, s := range load {
		total += s.echoed
	}
	t.Logf("SIGTERM: health NOT_SERVING seen after %s, listener refused after %s, exit 0 after %s; %d sessions accounted for, %d echoes in all",
		notServing.Round(time.Millisecond), p.refusedAt.Sub(sigterm).Round(time.Millisecond), exited.Round(time.Millisecond), accounted, total)
}

// containsLine reports whether a line of log contains s.
func containsLine(log *lineLog, s string) bool {
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, line := range log.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}
