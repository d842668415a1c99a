package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestClientSummaryCountsWhatWasSentBeforeTheEnd: a client whose input
// stays open (a person typing) counts every line it has written, whether
// the server ends the connection or the client is interrupted; it once
// printed sent=0 then, counting only when its send window filled or its
// input ended.
func TestClientSummaryCountsWhatWasSentBeforeTheEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, srv *serveProc, cl *proc)
		code int
		want string
	}{
		{"the server shuts down", func(t *testing.T, srv *serveProc, _ *proc) { srv.stop() }, 1,
			"closed: outcome=clean initiator=remote goodbye=server_shutdown "},
		{"the client is interrupted", func(t *testing.T, _ *serveProc, cl *proc) {
			if err := cl.cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
		}, exitInterrupted, "closed: outcome=clean initiator=local goodbye=normal "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			srv := startServe(t, "--dev-dir", dir)
			stdinR, stdinW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = stdinW.Close() })
			cl := start(t, stdinR, "client", "--addr", srv.addr, "--dev-dir", dir)
			cl.waitLine(cl.stderr, "connected: ")
			const n = 4
			for i := range n {
				line := fmt.Sprintf("typed line %d", i)
				if _, err := stdinW.WriteString(line + "\n"); err != nil {
					t.Fatal(err)
				}
				cl.waitLine(cl.stdout, line) // echoed: written and answered
			}
			tc.end(t, srv, cl)
			if code := cl.exitCode(); code != tc.code {
				t.Errorf("client exited %d, want %d", code, tc.code)
			}
			got := cl.waitLine(cl.stderr, tc.want)
			if want := fmt.Sprintf(" sent=%d received=%d", n, n); !strings.HasSuffix(got, want) {
				t.Errorf("client summary %q does not end with %q", tc.want+got, want)
			}
		})
	}
}
