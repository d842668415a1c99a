package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// waitFor bounds every wait of the end-to-end tests.
const waitFor = 30 * time.Second

// env is the environment of the subprocesses: no TLSGATE_* variables, and
// a config dir of their own so that the user's is never touched.
func env(t *testing.T) []string {
	t.Helper()
	home := t.TempDir()
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TLSGATE_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "GORACE=halt_on_error=1 atexit_sleep_ms=0")
}

// lineLog collects the lines of a stream as they arrive.
type lineLog struct {
	mu    sync.Mutex
	lines []string
	more  chan struct{} // cap 1: lines were added
	eof   chan struct{} // closed at the end of the stream
}

func newLineLog(r io.ReadCloser) *lineLog {
	l := &lineLog{more: make(chan struct{}, 1), eof: make(chan struct{})}
	go func() {
		defer close(l.eof)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
			select {
			case l.more <- struct{}{}:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, r) // after a too-long line, keep the writer unblocked
	}()
	return l
}

// find returns the rest of the first line starting with prefix.
func (l *lineLog) find(prefix string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			return rest, true
		}
	}
	return "", false
}

// String returns every line so far.
func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// proc is a running tlsgate subprocess.
type proc struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr *lineLog
	exited         chan struct{}
	waitErr        error // valid once exited is closed
}

// start runs tlsgate with args. stdin may be nil or an *os.File, which the
// child then owns (the parent's copy is closed).
func start(t *testing.T, stdin *os.File, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, stdin, args...)
}

// startEnv is start with extra environment variables ("KEY=value").
func startEnv(t *testing.T, extraEnv []string, stdin *os.File, args ...string) *proc {
	t.Helper()
	return startArgv(t, extraEnv, stdin, append([]string{binary(t)}, args...))
}

// startArgv is startEnv of any command line: argv[0] runs (a shell that
// execs tlsgate, say) with the arguments after it.
func startArgv(t *testing.T, extraEnv []string, stdin *os.File, argv []string) *proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(env(t), extraEnv...)
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, outW, errW
	err = cmd.Start()
	_ = outW.Close()
	_ = errW.Close()
	if stdin != nil {
		_ = stdin.Close()
	}
	if err != nil {
		_ = outR.Close()
		_ = errR.Close()
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, stdout: newLineLog(outR), stderr: newLineLog(errR), exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		<-p.stdout.eof
		<-p.stderr.eof
		if t.Failed() {
			t.Logf("%s\nstdout:\n%s\nstderr:\n%s", strings.Join(argv, " "), p.stdout, p.stderr)
		}
	})
	return p
}

// waitLine waits for a line starting with prefix on log and returns its rest.
func (p *proc) waitLine(log *lineLog, prefix string) string {
	p.t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for {
		if rest, ok := log.find(prefix); ok {
			return rest
		}
		select {
		case <-log.more:
		case <-log.eof:
			if rest, ok := log.find(prefix); ok {
				return rest
			}
			p.t.Fatalf("tlsgate ended its output without a line %q", prefix)
		case <-timer.C:
			p.t.Fatalf("no line %q within %s", prefix, waitFor)
		}
	}
}

// exitCode waits for the process to exit and returns its status.
func (p *proc) exitCode() int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(waitFor):
		p.t.Fatalf("tlsgate did not exit within %s", waitFor)
	}
	return p.cmd.ProcessState.ExitCode()
}

// serveProc is a running `tlsgate serve`.
type serveProc struct {
	*proc
	addr        string
	controlAddr string
	adminAddr   string
	fingerprint string
}

// startServe runs `tlsgate serve --addr 127.0.0.1:0 --control-addr
// 127.0.0.1:0 --admin-addr 127.0.0.1:0` with the extra args and waits
// until both planes and the admin listener listen.
func startServe(t *testing.T, args ...string) *serveProc {
	t.Helper()
	return startServeEnv(t, nil, args...)
}

// startServeEnv is startServe with extra environment variables.
//
// The handshake timeout is waitFor rather than its 5-second default: a
// client on a loaded machine can take longer than that to sign its auth,
// and the tests that are about the timeout set it with the flag.
func startServeEnv(t *testing.T, extraEnv []string, args ...string) *serveProc {
	t.Helper()
	extraEnv = append([]string{"TLSGATE_HANDSHAKE_TIMEOUT=" + waitFor.String()}, extraEnv...)
	p := startEnv(t, extraEnv, nil, append([]string{"serve", "--addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, args...)...)
	s := &serveProc{proc: p}
	s.addr = p.waitLine(p.stdout, "listening on ")
	s.controlAddr = p.waitLine(p.stdout, "control plane listening on ")
	s.adminAddr = p.waitLine(p.stdout, "admin listening on ")
	s.fingerprint, _ = p.stdout.find("dev certificate fingerprint: ")
	return s
}

// stop sends SIGTERM and checks that serve exits 0.
func (s *serveProc) stop() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	if code := s.exitCode(); code != 0 {
		s.t.Fatalf("serve exited %d after SIGTERM, want 0", code)
	}
}

// result is the outcome of a command run to completion.
type result struct {
	stdout, stderr string
	code           int
}

// runTlsgate runs tlsgate to completion with stdin as its input.
func runTlsgate(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = env(t)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("tlsgate %s did not finish within %s\nstderr:\n%s", strings.Join(args, " "), waitFor, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}
