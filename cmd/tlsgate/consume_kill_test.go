package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// grpcurlConsumer is a Consume stream run by a grpcurl process, requests
// written to its stdin, its output read line by line.
type grpcurlConsumer struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // closed at the end of its output
}

func startGrpcurlConsumer(t *testing.T, gc *grpcurl, open string) *grpcurlConsumer {
	t.Helper()
	cmd := exec.Command(gc.path, "-plaintext", "-v", "-d", "@", gc.addr, service+"/Consume")
	cmd.Env = gc.env
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &grpcurlConsumer{cmd: cmd, stdin: stdin, lines: make(chan string, 1024)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		for range c.lines { // drain, so the reader ends
		}
		_ = cmd.Wait()
	})
	c.send(t, open)
	c.waitFor(t, "Response headers received")
	return c
}

func (c *grpcurlConsumer) send(t *testing.T, request string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, request+"\n"); err != nil {
		t.Fatal(err)
	}
}

// waitFor reads output until a line contains s.
func (c *grpcurlConsumer) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("grpcurl Consume ended before printing %q", s)
			}
			if strings.Contains(line, s) {
				return
			}
		case <-deadline:
			t.Fatalf("grpcurl Consume printed no %q within %s", s, waitFor)
		}
	}
}

// TestConsumerKilledRedeliversToTheGroup: a consumer process (grpcurl)
// receives a session's 10 packets and acks 4 of them; it is killed with
// SIGKILL; the other member of its group (a Go gRPC client) receives the
// 6 it had not acked, in order and flagged redelivered, and none of the 4
// again; then the session's next packet, not flagged.
func TestConsumerKilledRedeliversToTheGroup(t *testing.T) {
	t.Parallel()
	gc := newGrpcurl(t, "")
	srv := startServe(t, "--dev-dir", t.TempDir())
	gc.addr = srv.controlAddr

	killed := startGrpcurlConsumer(t, gc, `{"open": {"group": "workers"}}`)
	c := dialSession(t, srv)
	sid := strconv.FormatUint(c.ID(), 10)
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	send := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if err := c.Send(ctx, client.Data(fmt.Append(nil, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(1, 4)
	killed.waitFor(t, `"seq": "4"`)
	killed.send(t, `{"acks": {"acks": [{"session_id": "`+sid+`", "through_seq": "4"}]}}`)
	// The Flush is answered once the group acked 1 to 4: the ack counts.
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// The other member joins; the session stays with the first (sticky).
	other, err := faultControl(t, srv.controlAddr).Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Send(&tlsgatev1.ConsumeRequest{Request: &tlsgatev1.ConsumeRequest_Open{Open: &tlsgatev1.ConsumeOpen{Group: "workers"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Header(); err != nil {
		t.Fatal(err)
	}
	send(5, 10)
	killed.waitFor(t, `"seq": "10"`)
	if err := killed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	// recv checks the other member's deliveries, through packet last.
	want := 5
	recv := func(last int, redelivered bool) {
		t.Helper()
		for want <= last {
			resp, err := other.Recv()
			if err != nil {
				t.Fatalf("the other member, waiting for packet %d: %v", want, err)
			}
			for _, d := range resp.GetDeliveries() {
				p := d.GetPacket()
				if p.GetSessionId() != c.ID() || p.GetSeq() != uint64(want) || string(p.GetPayload()) != strconv.Itoa(want) || d.GetRedelivered() != redelivered {
					t.Fatalf("delivery %v; want packet %d of session %d, redelivered %v", d, want, c.ID(), redelivered)
				}
				want++
			}
		}
	}
	recv(10, true)
	// Once the server has moved the session, what comes next is new.
	send(11, 11)
	recv(11, false)
	srv.stop()
}
