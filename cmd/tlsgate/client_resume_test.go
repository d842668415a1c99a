package main

// `tlsgate client --resume`: the real binary through a proxy that cuts its
// connection, and across a server killed and restarted (a gap).

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/gatewaytest"
)

// resumeLines are n distinct input lines, each also a unique prefix.
func resumeLines(from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("resumed line %05d.", i))
	}
	return out
}

// writeLines writes ls to w, one a line.
func writeLines(t *testing.T, w *os.File, ls []string) {
	t.Helper()
	if _, err := w.WriteString(joinLines(ls)); err != nil {
		t.Fatal(err)
	}
}

// TestClientResumeAcrossACut: a --resume client whose connection a proxy
// cuts with lines in flight reconnects, resumes, says so on stderr, and
// every line is echoed exactly once, in order; the summary counts the
// reconnect and it exits 0.
func TestClientResumeAcrossACut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServe(t, "--dev-dir", dir)
	px := gatewaytest.NewProxy(t, srv.addr)
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdinW.Close() })
	cl := start(t, stdinR, "client", "--addr", px.Addr(), "--dev-dir", dir, "--resume")
	cl.waitLine(cl.stderr, "connected: ")

	const half = 2000
	writeLines(t, stdinW, resumeLines(0, half))
	cl.waitLine(cl.stdout, resumeLines(half/4, half/4+1)[0]) // the rest of the first half may be in flight
	px.Cut()
	lost := cl.waitLine(cl.stderr, "tlsgate: connection lost (")
	resumed := cl.waitLine(cl.stderr, "tlsgate: resumed epoch ")
	writeLines(t, stdinW, resumeLines(half, 2*half))
	_ = stdinW.Close()
	if code := cl.exitCode(); code != 0 {
		t.Errorf("client exited %d, want 0", code)
	}
	<-cl.stdout.eof
	<-cl.stderr.eof

	if got, want := cl.stdout.String(), strings.Join(resumeLines(0, 2*half), "\n"); got != want {
		gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
		i := 0
		for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
			i++
		}
		t.Errorf("stdout is not the %d lines echoed once each, in order: %d lines, first difference at line %d", 2*half, len(gl), i+1)
	}
	if !strings.HasSuffix(lost, "); reconnecting") {
		t.Errorf("loss line %q does not end with \"); reconnecting\"", lost)
	}
	if !strings.Contains(resumed, " after 1 attempt in ") {
		t.Errorf("resume line %q lacks \" after 1 attempt in \"", resumed)
	}
	if _, ok := cl.stderr.find("tlsgate: GAP"); ok {
		t.Errorf("a gap was reported:\n%s", cl.stderr)
	}
	summary := cl.waitLine(cl.stderr, "closed: outcome=clean initiator=local goodbye=normal ")
	if want := fmt.Sprintf(" sent=%d received=%d reconnects=1 resent=", 2*half, 2*half); !strings.Contains(summary, want) {
		t.Errorf("summary %q lacks %q", summary, want)
	}
	if !strings.HasSuffix(summary, " gaps=0") {
		t.Errorf("summary %q does not end with \" gaps=0\"", summary)
	}
}

// TestClientResumeReportsAGap: a --resume client whose server is killed
// and restarted on the same address reconnects into a new epoch, prints
// the GAP line, counts it in its summary and exits 1 (lines may be
// missing or repeated), even though its close is clean.
func TestClientResumeReportsAGap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServe(t, "--dev-dir", dir)
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdinW.Close() })
	cl := start(t, stdinR, "client", "--addr", srv.addr, "--dev-dir", dir, "--resume")
	cl.waitLine(cl.stderr, "connected: ")
	writeLines(t, stdinW, resumeLines(0, 10))
	cl.waitLine(cl.stdout, resumeLines(9, 10)[0])

	if err := srv.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-srv.exited
	cl.waitLine(cl.stderr, "tlsgate: connection lost (")
	startServe(t, "--dev-dir", dir, "--addr", srv.addr) // the last --addr wins
	gap := cl.waitLine(cl.stderr, "tlsgate: GAP: the server started a new epoch ")
	cl.waitLine(cl.stderr, "tlsgate: reconnected after ")
	writeLines(t, stdinW, resumeLines(10, 20))
	_ = stdinW.Close()
	if code := cl.exitCode(); code != 1 {
		t.Errorf("client exited %d, want 1", code)
	}
	if !strings.Contains(gap, "(resumed=false) instead of resuming ") || !strings.Contains(gap, "packets may be missing or repeated") {
		t.Errorf("gap line %q", gap)
	}
	summary := cl.waitLine(cl.stderr, "closed: outcome=clean initiator=local goodbye=normal ")
	if !strings.Contains(summary, " reconnects=1 ") || !strings.HasSuffix(summary, " gaps=1") {
		t.Errorf("summary %q: want reconnects=1 and gaps=1", summary)
	}
	cl.waitLine(cl.stdout, resumeLines(19, 20)[0]) // the new epoch echoes what came after
}
