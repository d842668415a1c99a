package main

// End-to-end tests of the control plane: the real tlsgate binary, the real
// grpcurl (pinned, installed into bin/ by `make test`) through server
// reflection, and a client of the Go library.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/wire"
)

const service = "tlsgate.v1.ControlService"

// grpcurlBinary returns the pinned grpcurl: $TLSGATE_GRPCURL, else
// <repo>/bin/grpcurl. Without it the test fails in CI and is skipped
// elsewhere.
func grpcurlBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TLSGATE_GRPCURL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("TLSGATE_GRPCURL: %v", err)
		}
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "..", "bin", "grpcurl"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err == nil {
		return p
	}
	msg := "grpcurl not found: set TLSGATE_GRPCURL or install the pinned grpcurl into bin/ (run `make test`, or `make tools`)"
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// grpcurl runs the real grpcurl against one control plane.
type grpcurl struct {
	t       *testing.T
	path    string
	addr    string
	env     []string
	headers []string // -H values on every call
	flags   []string // more flags on every call
}

func newGrpcurl(t *testing.T, addr string, headers ...string) *grpcurl {
	t.Helper()
	var e []string
	for _, kv := range env(t) { // no proxy: the control plane is on loopback
		if k, _, _ := strings.Cut(kv, "="); !strings.HasSuffix(strings.ToLower(k), "_proxy") {
			e = append(e, kv)
		}
	}
	return &grpcurl{t: t, path: grpcurlBinary(t), addr: addr, env: e, headers: headers}
}

// run runs `grpcurl -plaintext [-H ...] [-d data] ADDR args...`; data ""
// sends no -d.
func (g *grpcurl) run(data string, args ...string) result {
	g.t.Helper()
	return g.exec(data, "", args...)
}

// runStdin runs `grpcurl -plaintext [-H ...] -d @ ADDR args...` with the
// request messages on stdin.
func (g *grpcurl) runStdin(stdin string, args ...string) result {
	g.t.Helper()
	return g.exec("@", stdin, args...)
}

func (g *grpcurl) exec(data, stdin string, args ...string) result {
	g.t.Helper()
	argv := []string{"-plaintext"}
	for _, h := range g.headers {
		argv = append(argv, "-H", h)
	}
	argv = append(argv, g.flags...)
	if data != "" {
		argv = append(argv, "-d", data)
	}
	argv = append(append(argv, g.addr), args...)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.path, argv...)
	cmd.Env = g.env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		g.t.Fatalf("grpcurl %s did not finish within %s\nstderr:\n%s", strings.Join(argv, " "), waitFor, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		g.t.Fatal(err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// call invokes method (of ControlService unless it names its service) with
// the JSON request data and decodes the JSON response into resp.
func (g *grpcurl) call(method, data string, resp proto.Message) {
	g.t.Helper()
	if !strings.Contains(method, "/") {
		method = service + "/" + method
	}
	r := g.run(data, method)
	if r.code != 0 {
		g.t.Fatalf("grpcurl %s %s: exit %d\nstderr:\n%s", method, data, r.code, r.stderr)
	}
	if err := protojson.Unmarshal([]byte(r.stdout), resp); err != nil {
		g.t.Fatalf("grpcurl %s: response %q: %v", method, r.stdout, err)
	}
}

// fail invokes method expecting the gRPC error code (grpcurl exits 64+code
// and prints "Code: NAME") and returns its message.
func (g *grpcurl) fail(method, data, code string, exit int) string {
	g.t.Helper()
	msg, _ := g.failDetails(method, data, code, exit)
	return msg
}

// failDetails is fail that also returns the status details as grpcurl
// prints them (JSON, after "Details:"), empty if there are none.
func (g *grpcurl) failDetails(method, data, code string, exit int) (msg, details string) {
	g.t.Helper()
	r := g.run(data, method)
	if r.code != 64+exit || !strings.Contains(r.stderr, "Code: "+code+"\n") {
		g.t.Fatalf("grpcurl %s %s: exit %d, stderr:\n%s\nwant exit %d and Code: %s", method, data, r.code, r.stderr, 64+exit, code)
	}
	_, msg, _ = strings.Cut(r.stderr, "Message: ")
	msg, details, _ = strings.Cut(msg, "\n  Details:")
	return strings.TrimSpace(msg), details
}

// TestControlPlaneGrpcurl: serve, a Go client, and grpcurl listing and
// describing the API, finding the session, sending it 1,000 payloads,
// draining them with ack and disconnecting it. The client gets the 1,000 in
// order, then Goodbye admin, then the end of the connection.
func TestControlPlaneGrpcurl(t *testing.T) {
	t.Parallel()
	gc := newGrpcurl(t, "") // skips before serve starts if grpcurl is missing
	// The client sends nothing while the 1,000 grpcurl calls run, which can
	// take longer than the idle interval: a Ping would then take a seq.
	srv := startServe(t, "--dev-dir", t.TempDir(), "--idle-interval", "1h")
	gc.addr = srv.controlAddr

	// Health and reflection, with no proto files.
	r := gc.run("", "grpc.health.v1.Health/Check")
	if r.code != 0 || !strings.Contains(r.stdout, `"status": "SERVING"`) {
		t.Fatalf("Health/Check: exit %d, stdout %q, stderr %q; want SERVING", r.code, r.stdout, r.stderr)
	}
	r = gc.run(`{"service": "`+service+`"}`, "grpc.health.v1.Health/Check")
	if r.code != 0 || !strings.Contains(r.stdout, `"status": "SERVING"`) {
		t.Fatalf("Health/Check of %s: exit %d, stdout %q, stderr %q; want SERVING", service, r.code, r.stdout, r.stderr)
	}
	r = gc.run("", "list")
	if r.code != 0 {
		t.Fatalf("grpcurl list: exit %d\n%s", r.code, r.stderr)
	}
	listed := strings.Fields(r.stdout)
	for _, want := range []string{service, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(listed, want) {
			t.Errorf("grpcurl list = %q, lacks %s", listed, want)
		}
	}
	r = gc.run("", "describe", service)
	if r.code != 0 {
		t.Fatalf("grpcurl describe: exit %d\n%s", r.code, r.stderr)
	}
	for _, rpc := range []string{"SendAsync", "SendBatch", "SendStream", "Consume", "Drain", "Disconnect", "GetSession", "ListSessions", "WatchSessions", "Receive"} {
		if !strings.Contains(r.stdout, "rpc "+rpc+" (") {
			t.Errorf("grpcurl describe %s lacks rpc %s:\n%s", service, rpc, r.stdout)
		}
	}
	r = gc.run("", "describe", "tlsgate.v1.SendAsyncRequest")
	if r.code != 0 || !strings.Contains(r.stdout, "uint64 session_id = 1;") || !strings.Contains(r.stdout, "bytes payload = 2;") {
		t.Errorf("grpcurl describe tlsgate.v1.SendAsyncRequest: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A client of the Go library, with a fresh key, pinning the certificate.
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	conn, err := client.Dial(dctx, srv.addr, key, client.WithFingerprint(srv.fingerprint))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_ = conn.Close(ctx) // a no-op once the server closed it
	})
	sid := strconv.FormatUint(conn.ID(), 10)
	if want := wire.SessionID(key.Public().(ed25519.PublicKey)); conn.ID() != want {
		t.Fatalf("session ID %d, want %d from the key", conn.ID(), want)
	}

	// Receive everything until the connection ends.
	var (
		mu       sync.Mutex
		received []client.Packet
		recvErr  error
	)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			p, err := conn.Recv(t.Context())
			mu.Lock()
			if err != nil {
				recvErr = err
				mu.Unlock()
				return
			}
			received = append(received, p)
			mu.Unlock()
		}
	}()

	var list tlsgatev1.ListSessionsResponse
	gc.call("ListSessions", "", &list)
	if len(list.GetSessions()) != 1 || list.GetSessions()[0].GetSessionId() != conn.ID() {
		t.Fatalf("ListSessions = %v, want the client's session %d alone", list.GetSessions(), conn.ID())
	}
	s := list.GetSessions()[0]
	if s.GetState() != tlsgatev1.SessionState_SESSION_STATE_ACTIVE || !bytes.Equal(s.GetPublicKey(), key.Public().(ed25519.PublicKey)) ||
		s.GetTlsVersion() != "TLS 1.3" || list.GetNextPageToken() != "" {
		t.Errorf("ListSessions: session %v, next page %q; want ACTIVE, the client's key, TLS 1.3, no next page", s, list.GetNextPageToken())
	}
	var got tlsgatev1.GetSessionResponse
	gc.call("GetSession", `{"session_id": "`+sid+`"}`, &got)
	if got.GetSession().GetSessionId() != conn.ID() {
		t.Errorf("GetSession = %v, want session %d", got.GetSession(), conn.ID())
	}

	// 1,000 SendAsync, one grpcurl each: grpcurl makes one unary call per
	// process, and they run one after another so that their order is the
	// order of the sequence numbers.
	const n = 1000
	start := time.Now()
	for i := 1; i <= n; i++ {
		payload := base64.StdEncoding.EncodeToString([]byte(strconv.Quote(strconv.Itoa(i))))
		var sent tlsgatev1.SendAsyncResponse
		gc.call("SendAsync", `{"session_id": "`+sid+`", "payload": "`+payload+`", "encoding": "ENCODING_JSON"}`, &sent)
		if sent.GetSeq() != uint64(i) {
			t.Fatalf("SendAsync #%d: seq %d, want %d", i, sent.GetSeq(), i)
		}
	}
	t.Logf("%d SendAsync through grpcurl took %s (%s each)", n, time.Since(start).Round(time.Millisecond), (time.Since(start) / n).Round(100*time.Microsecond))

	var drained tlsgatev1.DrainResponse
	gc.call("Drain", `{"session_id": "`+sid+`", "ack": true}`, &drained)
	if len(drained.GetSessions()) != 1 {
		t.Fatalf("Drain: %v, want one session", &drained)
	}
	if d := drained.GetSessions()[0]; d.GetSessionId() != conn.ID() || !d.GetAcknowledged() || d.GetFlushedSeq() != n || d.GetTargetSeq() != n || d.GetError() != "" {
		t.Errorf("Drain with ack: %v; want session %d acknowledged, flushed_seq and target_seq %d, no error", d, conn.ID(), n)
	}
	if drained.GetElapsed() == nil {
		t.Error("Drain: no elapsed")
	}

	var disc tlsgatev1.DisconnectResponse
	gc.call("Disconnect", `{"session_id": "`+sid+`", "reason": "end of the grpcurl test"}`, &disc)
	c := disc.GetConnection()
	if c.GetSessionId() != conn.ID() || c.GetGoodbyeCode() != wire.GoodbyeAdmin || c.GetGoodbyeReason() != "end of the grpcurl test" ||
		c.GetPeerGoodbyeCode() != wire.GoodbyeNormal || c.GetOutcome() != tlsgatev1.Outcome_OUTCOME_CLEAN ||
		c.GetCounters().GetPacketsOut() < n || c.GetCounters().GetUnwritten() != 0 {
		t.Errorf("Disconnect: %v; want Goodbye admin with the reason, the client's normal, outcome CLEAN, >= %d packets out, none unwritten", c, n)
	}

	// The client: the 1,000 in order, then Goodbye admin and the end.
	select {
	case <-recvDone:
	case <-time.After(waitFor):
		t.Fatalf("the client's Recv did not end within %s of Disconnect", waitFor)
	}
	select {
	case <-conn.Done():
	case <-time.After(waitFor):
		t.Fatalf("the client connection did not end within %s of Disconnect", waitFor)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(received) != n {
		t.Errorf("the client received %d packets, want %d", len(received), n)
	}
	for i, p := range received {
		want := strconv.Quote(strconv.Itoa(i + 1))
		if p.Type != wire.TypeData || p.Encoding != wire.JSON || string(p.Payload) != want {
			t.Fatalf("packet %d: %s %s %q, want Data JSON %q", i+1, p.Type, p.Encoding, p.Payload, want)
		}
	}
	var ce *client.CloseError
	if !errors.Is(recvErr, client.ErrClosed) || !errors.As(recvErr, &ce) {
		t.Fatalf("Recv after the packets: %v, want ErrClosed with a *client.CloseError", recvErr)
	}
	if ce.Code != wire.GoodbyeAdmin || ce.Reason != "end of the grpcurl test" || ce.Initiator != client.InitiatorRemote || ce.Outcome != client.OutcomeClean {
		t.Errorf("client close: %+v; want Goodbye admin with the reason, initiated remotely, clean", ce)
	}
	if err := conn.Err(); !errors.Is(err, ce) {
		t.Errorf("conn.Err() = %v, want the CloseError Recv returned: %v", err, ce)
	}

	// The session is gone.
	msg := gc.fail(service+"/GetSession", `{"session_id": "`+sid+`"}`, "NotFound", 5)
	if want := "session " + sid + ": no such session"; msg != want {
		t.Errorf("GetSession after Disconnect: message %q, want %q", msg, want)
	}
	list.Reset()
	gc.call("ListSessions", "{}", &list)
	if len(list.GetSessions()) != 0 {
		t.Errorf("ListSessions after Disconnect: %v, want none", list.GetSessions())
	}
	srv.stop()
}

// TestControlPlaneAuth: with a bearer token every RPC but health needs it;
// and a control plane on a non-loopback address needs a token (or
// --insecure-control-plane) to start at all.
func TestControlPlaneAuth(t *testing.T) {
	t.Parallel()
	const token = "e2e-s3cret-token"
	noAuth := newGrpcurl(t, "")
	srv := startServeEnv(t, []string{"TLSGATE_CONTROL_TOKEN=" + token}, "--dev-dir", t.TempDir())
	noAuth.addr = srv.controlAddr
	authed := newGrpcurl(t, srv.controlAddr, "authorization: Bearer "+token)
	wrong := newGrpcurl(t, srv.controlAddr, "authorization: Bearer not-"+token)

	// Reflection needs the token too, so grpcurl without it fails looking
	// the method up.
	for _, args := range [][]string{{"list"}, {service + "/ListSessions"}} {
		r := noAuth.run("", args...)
		if r.code == 0 || !strings.Contains(r.stderr, "Unauthenticated") || !strings.Contains(r.stderr, "missing bearer token") {
			t.Errorf("grpcurl %s without a token: exit %d, stderr %q; want Unauthenticated, missing bearer token", args[0], r.code, r.stderr)
		}
	}

	// Past reflection, with the descriptors exported by an authorized
	// grpcurl: the calls reach the services, where health needs no token.
	dir := t.TempDir()
	for _, svc := range []string{service, "grpc.health.v1.Health"} {
		protoset := filepath.Join(dir, svc+".protoset")
		authed.flags = []string{"-protoset-out", protoset}
		if r := authed.run("", "describe", svc); r.code != 0 {
			t.Fatalf("grpcurl -protoset-out %s describe %s with the token: exit %d\n%s", protoset, svc, r.code, r.stderr)
		}
		noAuth.flags = append(noAuth.flags, "-protoset", protoset)
	}
	authed.flags = nil
	wrong.flags = noAuth.flags
	if r := noAuth.run("", "grpc.health.v1.Health/Check"); r.code != 0 || !strings.Contains(r.stdout, `"status": "SERVING"`) {
		t.Errorf("Health/Check without a token: exit %d, stdout %q, stderr %q; want SERVING", r.code, r.stdout, r.stderr)
	}
	msg := noAuth.fail(service+"/ListSessions", "{}", "Unauthenticated", 16)
	if want := `missing bearer token: send the metadata "authorization: Bearer <token>"`; msg != want {
		t.Errorf("ListSessions without a token: message %q, want %q", msg, want)
	}
	if msg := wrong.fail(service+"/ListSessions", "{}", "Unauthenticated", 16); msg != "invalid bearer token" {
		t.Errorf("ListSessions with a wrong token: message %q, want \"invalid bearer token\"", msg)
	}
	var list tlsgatev1.ListSessionsResponse
	authed.call("ListSessions", "{}", &list)
	if len(list.GetSessions()) != 0 {
		t.Errorf("ListSessions with the token: %v, want no sessions", list.GetSessions())
	}
	if r := authed.run("", "list"); r.code != 0 || !strings.Contains(r.stdout, service) {
		t.Errorf("grpcurl list with the token: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// Past auth, validation names the field, in the message and in a
	// google.rpc.BadRequest that grpcurl decodes.
	msg, details := authed.failDetails(service+"/GetSession", "{}", "InvalidArgument", 3)
	if msg != "session_id: required" {
		t.Errorf("GetSession {} with the token: message %q, want \"session_id: required\"", msg)
	}
	if !strings.Contains(details, `"@type": "type.googleapis.com/google.rpc.BadRequest"`) || !strings.Contains(details, `"field": "session_id"`) {
		t.Errorf("GetSession {} with the token: details %q, want a BadRequest naming session_id", details)
	}
	srv.stop()
	if strings.Contains(srv.stderr.String(), token) {
		t.Error("serve logged the control token")
	}

	t.Run("non-loopback without a token", func(t *testing.T) {
		t.Parallel()
		r := runTlsgate(t, "", "serve", "--addr", "127.0.0.1:0", "--control-addr", "0.0.0.0:0", "--dev-dir", t.TempDir())
		if r.code != 80 {
			t.Errorf("exit %d, want 80 (usage error)", r.code)
		}
		for _, want := range []string{"--control-addr 0.0.0.0:0 is not a loopback address", "--control-token", "TLSGATE_CONTROL_TOKEN", "--insecure-control-plane"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
			}
		}
		if strings.Contains(r.stdout, "listening on") {
			t.Errorf("serve started listening:\n%s", r.stdout)
		}
	})
}

// TestPlaintextTokenOffLoopbackNeedsItsFlag: with
// --insecure-control-token, serve takes a bearer token over plaintext on a
// non-loopback address, and says so in a warning; without it, it refuses
// to start (TestBadFlagValues).
func TestPlaintextTokenOffLoopbackNeedsItsFlag(t *testing.T) {
	t.Parallel()
	srv := startServeEnv(t, []string{"TLSGATE_CONTROL_TOKEN=0123456789abcdef-token"},
		"--dev-dir", t.TempDir(), "--control-addr", "0.0.0.0:0", "--insecure-control-token")
	srv.stop()
	<-srv.stderr.eof
	if !strings.Contains(srv.stderr.String(), "level=WARN msg=\"the control plane takes its bearer token over plaintext gRPC on a non-loopback address (--insecure-control-token)") {
		t.Errorf("serve logged no warning about the plaintext token:\n%s", srv.stderr.String())
	}
}

// TestGrpcurlOneofTrap shows the trap docs/control-api.md warns of: given
// both members of Drain's target, grpcurl sends only the one it parsed
// last, so the server, which sees one, drains every session or one.
func TestGrpcurlOneofTrap(t *testing.T) {
	t.Parallel()
	srv := startServe(t, "--dev-dir", t.TempDir())
	a := dial(t, srv, newKey(t))
	dial(t, srv, newKey(t)) // a second session, which all_sessions drains too
	gc := newGrpcurl(t, srv.controlAddr)
	sid := strconv.FormatUint(a.ID(), 10)
	for _, tc := range []struct {
		data string
		want int // sessions drained
	}{
		{`{"session_id": "` + sid + `", "all_sessions": true}`, 2},
		{`{"all_sessions": true, "session_id": "` + sid + `"}`, 1},
	} {
		var drained tlsgatev1.DrainResponse
		gc.call("Drain", tc.data, &drained)
		if len(drained.GetSessions()) != tc.want {
			t.Errorf("Drain %s drained %d sessions, want %d (the member parsed last)", tc.data, len(drained.GetSessions()), tc.want)
		}
	}
}
