package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// BackendEnv is set (to "1") in the environment of the backend process of
// the send-stream, send-batch and consume scenarios.
const BackendEnv = "TLSGATE_BENCH_BACKEND"

// The backend process is a backend as a user would run one: another OS
// process, talking to the gateway's control plane over loopback gRPC. The
// parent sends it one job per line on stdin and reads one report per line
// on stdout.

// backendJob is one line the parent writes.
type backendJob struct {
	// Kind: "send" (send for Duration, then Drain with ack), "consume"
	// (join a group with Members streams and consume until "stop"),
	// "stop" (end the consumers and report what they saw), "receive"
	// (open a Receive stream of every session) or "receive-end" (wait for
	// the Receive stream to end, as the gateway shuts down, and report).
	Kind        string   `json:"kind"`
	ControlAddr string   `json:"control_addr,omitempty"`
	Method      string   `json:"method,omitempty"` // send: "stream", "batch" or "async"
	Sessions    []uint64 `json:"sessions,omitempty"`
	Payload     int      `json:"payload,omitempty"`
	DurationNS  int64    `json:"duration_ns,omitempty"`
	Batch       int      `json:"batch,omitempty"`     // items a request (stream, batch)
	InFlight    int      `json:"in_flight,omitempty"` // requests or calls awaiting an answer
	Members     int      `json:"members,omitempty"`   // consume
	Group       string   `json:"group,omitempty"`     // consume
}

// backendReport is the answer to one job.
type backendReport struct {
	Err string `json:"err,omitempty"`
	// send: items queued, items refused (with the first refusal), and the
	// time from the first send to the end of the Drain with ack.
	Accepted  uint64 `json:"accepted,omitempty"`
	Rejected  uint64 `json:"rejected,omitempty"`
	Refusal   string `json:"refusal,omitempty"`
	ElapsedNS int64  `json:"elapsed_ns,omitempty"`
	// consume: the packets delivered (redelivered included), the distinct
	// ones (the sum over sessions of the highest seq), deliveries out of
	// order (a seq other than the next, not flagged redelivered), and the
	// latency from the client's write to the consumer, from stamped
	// packets.
	Delivered   uint64 `json:"delivered,omitempty"`
	Distinct    uint64 `json:"distinct,omitempty"`
	Redelivered uint64 `json:"redelivered,omitempty"`
	OutOfOrder  uint64 `json:"out_of_order,omitempty"`
	P50NS       int64  `json:"p50_ns,omitempty"`
	P99NS       int64  `json:"p99_ns,omitempty"`
	Samples     int    `json:"samples,omitempty"`
	// receive-end: the wall clock (Unix ns) of the last packet, and how
	// the stream ended (in Refusal).
	LastNS int64 `json:"last_ns,omitempty"`
}

// RunBackend is the backend process: it runs the jobs read from in and
// writes their reports to out, until in ends. Run by `tlsgate
// bench-backend` (hidden) or a test binary.
func RunBackend(ctx context.Context, in io.Reader, out io.Writer, log *slog.Logger) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	b := &backendProc{log: log, conns: make(map[string]*grpc.ClientConn)}
	defer b.close()
	for {
		var job backendJob
		if err := dec.Decode(&job); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("backend job: %w", err)
		}
		var rep backendReport
		var err error
		switch job.Kind {
		case "send":
			rep, err = b.send(ctx, job)
		case "consume":
			err = b.startConsumers(ctx, job)
		case "stop":
			rep, err = b.stopConsumers()
		case "receive":
			err = b.startReceive(ctx, job)
		case "receive-end":
			rep, err = b.endReceive()
		default:
			err = fmt.Errorf("unknown job %q", job.Kind)
		}
		if err != nil {
			rep.Err = err.Error()
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
}

// backendProc is the backend process's state across jobs.
type backendProc struct {
	log   *slog.Logger
	conns map[string]*grpc.ClientConn // by address, for the send jobs
	cons  *consumers                  // the running consume job
	recv  *receiver                   // the running receive job
}

// conn returns the (shared) client connection to addr.
func (b *backendProc) conn(addr string) (*grpc.ClientConn, error) {
	if cc, ok := b.conns[addr]; ok {
		return cc, nil
	}
	cc, err := dialGRPC(addr)
	if err != nil {
		return nil, err
	}
	b.conns[addr] = cc
	return cc, nil
}

func (b *backendProc) close() {
	if b.cons != nil {
		_, _ = b.stopConsumers()
	}
	if b.recv != nil {
		_ = b.recv.cc.Close()
	}
	for _, cc := range b.conns {
		_ = cc.Close()
	}
}

// backendChild is the parent's handle on a backend process.
type backendChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	enc    *json.Encoder
	dec    *json.Decoder
	stderr *bytes.Buffer
	mu     sync.Mutex // one job at a time

	stopped sync.Once
	stopErr error
}

// startBackend starts the backend process.
func (e *env) startBackend(ctx context.Context) (*backendChild, error) {
	argv := e.opts.BackendArgv
	if len(argv) == 0 {
		return nil, errors.New("this scenario needs a backend process (Options.BackendArgv)")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), BackendEnv+"=1")
	b := &backendChild{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = b.stderr
	var err error
	if b.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("backend process: %w", err)
	}
	b.enc, b.dec = json.NewEncoder(b.stdin), json.NewDecoder(out)
	return b, nil
}

// run sends one job and waits for its report; a report's Err is an error.
func (b *backendChild) run(job backendJob) (backendReport, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var rep backendReport
	err := b.enc.Encode(job)
	if err == nil {
		err = b.dec.Decode(&rep)
	}
	if err != nil { // the process is gone: wait for it, for its stderr
		return rep, fmt.Errorf("backend process, %s job: %w (%v)", job.Kind, err, b.stop())
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("backend process, %s job: %s", job.Kind, rep.Err)
	}
	return rep, nil
}

// stop ends the process's input and waits for it to exit. Later calls
// return the first one's result.
func (b *backendChild) stop() error {
	b.stopped.Do(func() {
		_ = b.stdin.Close()
		if err := b.cmd.Wait(); err != nil {
			b.stopErr = fmt.Errorf("backend process: %w; stderr: %s", err, b.stderr.String())
		}
	})
	return b.stopErr
}

// stamp writes the wall clock into the first 8 bytes of a payload, for the
// latency from one process to another (the same machine's clock); a
// payload of zeros carries no stamp.
func stamp(p []byte) {
	if len(p) >= 8 {
		putStamp(p, time.Now().UnixNano())
	}
}

func putStamp(p []byte, ns int64) {
	for i := range 8 {
		p[i] = byte(ns >> (56 - 8*i))
	}
}

// stamped returns the latency of a stamped payload, or false.
func stamped(p []byte) (time.Duration, bool) {
	if len(p) < 8 {
		return 0, false
	}
	var ns int64
	for i := range 8 {
		ns = ns<<8 | int64(p[i])
	}
	if ns == 0 {
		return 0, false
	}
	return time.Duration(time.Now().UnixNano() - ns), true
}
