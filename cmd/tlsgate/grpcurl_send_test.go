package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// dialSession connects a Go client to srv with a new key, closed at the
// test's end.
func dialSession(t *testing.T, srv *serveProc) *client.Conn {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	conn, err := client.Dial(ctx, srv.addr, key, client.WithFingerprint(srv.fingerprint))
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

// recvPayloads reads n packets from c and returns their payloads.
func recvPayloads(t *testing.T, c *client.Conn, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	var got []string
	for range n {
		p, err := c.Recv(ctx)
		if err != nil {
			t.Fatalf("Recv after %q: %v", got, err)
		}
		got = append(got, string(p.Payload))
	}
	return got
}

// TestSendBatchAndStreamThroughGrpcurl: grpcurl finds SendBatch and
// SendStream by reflection; a SendBatch for two sessions with one bad item
// answers two results and one per-item error, and a SendStream of two
// requests read from stdin answers two responses. Each client receives
// its packets in order.
func TestSendBatchAndStreamThroughGrpcurl(t *testing.T) {
	t.Parallel()
	gc := newGrpcurl(t, "")
	srv := startServe(t, "--dev-dir", t.TempDir())
	gc.addr = srv.controlAddr

	r := gc.run("", "describe", service)
	for _, rpc := range []string{"rpc SendBatch ( .tlsgate.v1.SendBatchRequest )", "rpc SendStream ( stream .tlsgate.v1.SendStreamRequest )"} {
		if !strings.Contains(r.stdout, rpc) {
			t.Errorf("grpcurl describe %s lacks %q:\n%s", service, rpc, r.stdout)
		}
	}

	a, b := dialSession(t, srv), dialSession(t, srv)
	aid, bid := strconv.FormatUint(a.ID(), 10), strconv.FormatUint(b.ID(), 10)
	// "ImEi" is base64 of `"a1"`, and so on: grpcurl's JSON carries bytes
	// in base64.
	var batch tlsgatev1.SendBatchResponse
	gc.call("SendBatch", `{"items": [
		{"session_id": "`+aid+`", "payload": "ImEi"},
		{"session_id": "0", "payload": "ImJhZCI="},
		{"session_id": "`+bid+`", "payload": "ImIi"}]}`, &batch)
	rs := batch.GetResults()
	if len(rs) != 3 || rs[0].GetSeq() != 1 || rs[0].GetError() != nil || rs[2].GetSeq() != 1 || rs[2].GetError() != nil ||
		codes.Code(rs[1].GetError().GetCode()) != codes.InvalidArgument || rs[1].GetError().GetMessage() != "items[1].session_id: required" {
		t.Fatalf("SendBatch: %v; want seq 1 for both sessions and INVALID_ARGUMENT items[1].session_id for the bad item", &batch)
	}

	// SendStream, two requests on stdin (-d @).
	stream := `{"items": [{"session_id": "` + aid + `", "payload": "ImEyIg=="}]}
{"items": [{"session_id": "` + bid + `", "payload": "ImIyIg=="}, {"session_id": "` + aid + `", "payload": "ImEzIg=="}], "full_queue": "FULL_QUEUE_POLICY_WAIT"}`
	r = gc.runStdin(stream, service+"/SendStream")
	if r.code != 0 {
		t.Fatalf("grpcurl SendStream: exit %d\n%s", r.code, r.stderr)
	}
	var seqs [][]uint64
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("SendStream output %q: %v", r.stdout, err)
		}
		var resp tlsgatev1.SendStreamResponse
		if err := protojson.Unmarshal(raw, &resp); err != nil {
			t.Fatalf("SendStream response %s: %v", raw, err)
		}
		var s []uint64
		for _, res := range resp.GetResults() {
			if res.GetError() != nil {
				t.Fatalf("SendStream: item error %v", res.GetError())
			}
			s = append(s, res.GetSeq())
		}
		seqs = append(seqs, s)
	}
	if len(seqs) != 2 || len(seqs[0]) != 1 || seqs[0][0] != 2 || len(seqs[1]) != 2 || seqs[1][0] != 2 || seqs[1][1] != 3 {
		t.Fatalf("SendStream seqs %v, want [[2] [2 3]]", seqs)
	}

	if got := strings.Join(recvPayloads(t, a, 3), " "); got != `"a" "a2" "a3"` {
		t.Errorf("session a received %s", got)
	}
	if got := strings.Join(recvPayloads(t, b, 2), " "); got != `"b" "b2"` {
		t.Errorf("session b received %s", got)
	}
	srv.stop()
}
