package main

// Faults with the real binary: the server killed (or frozen) under a Go
// client, and a `tlsgate client` process killed under the server, seen
// through the control plane's WatchSessions.

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/wire"
)

// faultKey returns a fresh client key.
func faultKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// faultDial connects the Go client library to serve, pinning its dev
// certificate; the connection is closed (or found closed) at the end.
func faultDial(t *testing.T, srv *serveProc, opts ...client.Option) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	conn, err := client.Dial(ctx, srv.addr, faultKey(t), append([]client.Option{client.WithFingerprint(srv.fingerprint)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// streamer keeps a Go client busy: one goroutine sends numbered packets
// with SendAsync (a window of them in flight), another receives the
// echoes, until the connection fails.
type streamer struct {
	conn     *client.Conn
	echoed   chan struct{} // closed once `after` echoes have arrived
	recvDone chan struct{}
	sendDone chan struct{}
	recvErr  error // valid once recvDone is closed
	recvAt   time.Time
	sendErrs []error // valid once sendDone is closed
}

func startStreamer(t *testing.T, conn *client.Conn, payload []byte, after int) *streamer {
	t.Helper()
	s := &streamer{conn: conn, echoed: make(chan struct{}), recvDone: make(chan struct{}), sendDone: make(chan struct{})}
	go func() {
		defer close(s.sendDone)
		var inflight []<-chan error
		for len(s.sendErrs) == 0 {
			inflight = append(inflight, conn.SendAsync(client.Data(payload)))
			if len(inflight) == 64 {
				if err := <-inflight[0]; err != nil {
					s.sendErrs = append(s.sendErrs, err)
				}
				inflight = inflight[1:]
			}
		}
		for _, ch := range inflight {
			if err := <-ch; err != nil {
				s.sendErrs = append(s.sendErrs, err)
			}
		}
	}()
	go func() {
		defer close(s.recvDone)
		for n := 1; ; n++ {
			if _, err := conn.Recv(context.Background()); err != nil {
				s.recvErr, s.recvAt = err, time.Now()
				return
			}
			if n == after {
				close(s.echoed)
			}
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_ = conn.Close(ctx)
		<-s.sendDone
		<-s.recvDone
	})
	select {
	case <-s.echoed:
	case <-s.recvDone:
		t.Fatalf("the connection ended before %d echoes: %v", after, s.recvErr)
	case <-time.After(waitFor):
		t.Fatalf("no %d echoes within %s", after, waitFor)
	}
	return s
}

// within runs f and fails if it takes longer than limit; it returns f's error.
func within(t *testing.T, what string, limit time.Duration, f func() error) error {
	t.Helper()
	start := time.Now()
	err := f()
	if d := time.Since(start); d > limit {
		t.Errorf("%s took %s, want less than %s", what, d.Round(time.Millisecond), limit)
	}
	return err
}

// TestServerKilledMidStream: serve is killed with SIGKILL while a Go client
// sends and receives. The client reports the connection lost at once, with
// an error matching client.ErrConnectionLost, and Send, Flush and Close
// return well before their 5 s context.
func TestServerKilledMidStream(t *testing.T) {
	t.Parallel()
	srv := startServe(t, "--dev-dir", t.TempDir())
	conn := faultDial(t, srv)
	s := startStreamer(t, conn, []byte(`"mid-stream"`), 1000)

	killed := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.recvDone:
	case <-time.After(waitFor):
		t.Fatalf("Recv still blocked %s after the server was killed", waitFor)
	}
	if d := s.recvAt.Sub(killed); d > 2*time.Second {
		t.Errorf("the client noticed the loss after %s, want it promptly", d.Round(time.Millisecond))
	}
	if !errors.Is(s.recvErr, client.ErrConnectionLost) || !errors.Is(s.recvErr, client.ErrClosed) {
		t.Fatalf("Recv after the kill: %v, want ErrClosed and ErrConnectionLost", s.recvErr)
	}
	var ce *client.CloseError
	if !errors.As(conn.Err(), &ce) || (ce.Outcome != client.OutcomeLost && ce.Outcome != client.OutcomePeerClosed) || ce.Code != "" {
		t.Fatalf("conn.Err() = %v, want a lost connection without Goodbye", conn.Err())
	}
	<-s.sendDone
	for _, err := range s.sendErrs {
		if !errors.Is(err, client.ErrClosed) && !errors.Is(err, client.ErrClosing) {
			t.Errorf("a SendAsync in flight failed with %v, want ErrClosed or ErrClosing", err)
		}
	}

	const ctxLimit = 5 * time.Second
	ctx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), ctxLimit)
	}
	err := within(t, "Send", ctxLimit/2, func() error {
		c, cancel := ctx()
		defer cancel()
		return conn.Send(c, client.Data([]byte(`"after"`)))
	})
	if !errors.Is(err, client.ErrClosed) || !errors.Is(err, client.ErrConnectionLost) {
		t.Errorf("Send after the kill: %v, want ErrClosed and ErrConnectionLost", err)
	}
	err = within(t, "Flush", ctxLimit/2, func() error {
		c, cancel := ctx()
		defer cancel()
		return conn.Flush(c)
	})
	if !errors.Is(err, client.ErrClosed) {
		t.Errorf("Flush after the kill: %v, want ErrClosed", err)
	}
	err = within(t, "Close", ctxLimit/2, func() error {
		c, cancel := ctx()
		defer cancel()
		return conn.Close(c)
	})
	if !errors.Is(err, client.ErrConnectionLost) {
		t.Errorf("Close after the kill: %v, want ErrConnectionLost", err)
	}
}

// TestServerFrozenMidStream: serve is stopped with SIGSTOP, so that its
// sockets stay open but nothing answers. Send (behind megabytes the kernel
// will not take), Flush and Close each return when their context ends,
// not later.
func TestServerFrozenMidStream(t *testing.T) {
	t.Parallel()
	srv := startServe(t, "--dev-dir", t.TempDir())
	conn := faultDial(t, srv)
	s := startStreamer(t, conn, []byte(`"mid-stream"`), 1000)
	if err := srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.cmd.Process.Signal(syscall.SIGCONT) }) // then the proc cleanup kills it

	// More than the socket buffers hold, so that a Send waits behind them.
	big := make([]byte, 60000)
	var queued []<-chan error
	for range 400 { // 24 MB
		queued = append(queued, conn.SendAsync(client.Packet{Type: wire.TypeData, Payload: big}))
	}
	const limit = 500 * time.Millisecond
	bounded := func(what string, f func(context.Context) error) error {
		start := time.Now() // before the context: its deadline is start+limit at the latest
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		err := f(ctx)
		if d := time.Since(start); d < limit || d > limit+3*time.Second {
			t.Errorf("%s returned after %s, want when its context of %s ended", what, d.Round(time.Millisecond), limit)
		}
		return err
	}
	if err := bounded("Send", func(ctx context.Context) error { return conn.Send(ctx, client.Data([]byte(`"stuck"`))) }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send to the frozen server: %v, want its context's deadline", err)
	}
	if err := bounded("Flush", conn.Flush); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush to the frozen server: %v, want its context's deadline", err)
	}
	err := bounded("Close", conn.Close)
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Outcome != client.OutcomeForced || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close of the frozen connection: %v, want outcome forced by its context's deadline", err)
	}
	// The sends still queued fail once the connection is closed; the
	// first ones may have been written before the buffers filled.
	failed := 0
	for i, ch := range queued {
		select {
		case err := <-ch:
			switch {
			case err != nil && !errors.Is(err, client.ErrClosed):
				t.Errorf("SendAsync %d: %v, want ErrClosed", i, err)
			case err != nil:
				failed++
			case failed > 0:
				t.Errorf("SendAsync %d was written after an earlier one failed", i)
			}
		case <-time.After(waitFor):
			t.Fatal("a SendAsync still pending after Close returned")
		}
	}
	if failed == 0 {
		t.Error("all 24 MB reached the frozen server: nothing was pending")
	}
	<-s.recvDone
	if !errors.Is(s.recvErr, client.ErrClosed) {
		t.Errorf("Recv after Close: %v, want ErrClosed", s.recvErr)
	}
}

// faultControl is a Go gRPC client of serve's control plane.
func faultControl(t *testing.T, addr string) tlsgatev1.ControlServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return tlsgatev1.NewControlServiceClient(cc)
}

// waitContains waits for a line of log containing every one of parts.
func waitContains(t *testing.T, log *lineLog, parts ...string) string {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for {
		log.mu.Lock()
		for _, line := range log.lines {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				log.mu.Unlock()
				return line
			}
		}
		log.mu.Unlock()
		select {
		case <-log.more:
		case <-log.eof:
			t.Fatalf("the output ended without a line with %q", parts)
		case <-timer.C:
			t.Fatalf("no line with %q within %s", parts, waitFor)
		}
	}
}

// TestClientKilledMidStream: a `tlsgate client` process, its stdin fed
// continuously, is killed with SIGKILL. The server closes the session at
// once (well within the linger and idle timeouts), and the closed event,
// seen through WatchSessions, and the log record the outcome peer_closed.
func TestClientKilledMidStream(t *testing.T) {
	t.Parallel()
	const linger, idle, pong = time.Second, 2 * time.Second, 2 * time.Second
	dir := t.TempDir()
	srv := startServe(t, "--dev-dir", dir, "--linger-timeout", linger.String(), "--idle-interval", idle.String(), "--pong-timeout", pong.String())
	api := faultControl(t, srv.controlAddr)
	ctx, cancel := context.WithTimeout(t.Context(), 2*waitFor) // bounds every wait on the stream
	defer cancel()
	watch, err := api.WatchSessions(ctx, &tlsgatev1.WatchSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Header(); err != nil { // subscribed
		t.Fatal(err)
	}

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cl := start(t, stdinR, "client", "--addr", srv.addr, "--dev-dir", dir)
	stop := make(chan struct{})
	var feeding sync.WaitGroup
	feeding.Go(func() { // until the client is gone: then the pipe breaks
		defer stdinW.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := fmt.Fprintf(stdinW, "line %d\n", i); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() {
		close(stop)
		_ = stdinW.Close() // unblocks a write to a client that no longer reads
		feeding.Wait()
	})
	sid, err := strconv.ParseUint(strings.Fields(cl.waitLine(cl.stderr, "connected: session "))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	cl.waitLine(cl.stdout, "line 500") // echoes are flowing

	killed := time.Now()
	if err := cl.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	connected := false
	for {
		ev, err := watch.Recv()
		if err != nil {
			t.Fatalf("WatchSessions: %v", err)
		}
		if c := ev.GetConnected(); c != nil && c.GetSession().GetSessionId() == sid {
			connected = true
		}
		c := ev.GetClosed()
		if c == nil || c.GetSessionId() != sid {
			continue
		}
		d := time.Since(killed)
		if !connected {
			t.Error("the closed event came without the connected event before it")
		}
		if c.GetOutcome() != tlsgatev1.Outcome_OUTCOME_PEER_CLOSED || c.GetCounters().GetPacketsIn() == 0 {
			t.Errorf("closed event %v, want outcome PEER_CLOSED after packets in", c)
		}
		if d > linger+idle+pong {
			t.Errorf("the session closed %s after the kill, want within the linger and idle timeouts (%s)", d.Round(time.Millisecond), linger+idle+pong)
		}
		t.Logf("client killed: session closed %s later, %d packets in, %d out", d.Round(time.Millisecond), c.GetCounters().GetPacketsIn(), c.GetCounters().GetPacketsOut())
		break
	}
	waitContains(t, srv.stderr, `msg="connection closed"`, "session_id="+strconv.FormatUint(sid, 10), "outcome=peer_closed")
	if code := cl.exitCode(); code != -1 {
		t.Errorf("killed client exit code %d, want -1 (signal)", code)
	}
	srv.stop()
}
