package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"golang.org/x/term"

	"github.com/tlsgate/tlsgate/internal/loadgen"
	"github.com/tlsgate/tlsgate/wire"
)

// benchCmd is `tlsgate bench`: the load generator of docs/performance.md.
type benchCmd struct {
	Scenario        string        `enum:"${scenarios},all" default:"all" help:"Scenario: ${enum} (default: ${default}; all runs every scenario but resume, which runs only when named)."`
	JSON            bool          `name:"json" help:"Print the results as JSON on stdout instead of a table (and no progress bar)."`
	Duration        time.Duration `default:"3s" help:"Length of each throughput and echo measurement; throughput's is shared by its rounds (default: ${default})."`
	Rounds          int           `default:"3" help:"Alternating rounds of baseline and gateway per throughput figure; the ratio is the median of the rounds' (default: ${default})."`
	Conns           int           `default:"2" help:"Connections of inbound and outbound; echo uses one (default: ${default})."`
	Payload         []int         `default:"64,1024" placeholder:"BYTES" help:"Data payload sizes of inbound; outbound, echo and close use the first (default: ${default})."`
	Sessions        []int         `default:"1000,10000" placeholder:"N" help:"Idle session counts of connections (default: ${default})."`
	DialConcurrency int           `default:"64" help:"Handshakes in flight at once in connections (default: ${default})."`
	Samples         int           `default:"200" help:"Operations timed per case in close (default: ${default})."`
	Queued          int           `default:"1000" help:"Packets queued before the full-queue cases of close (default: ${default})."`
	RPCConcurrency  int           `name:"rpc-concurrency" default:"16" help:"gRPC calls in flight at once in outbound, and send-stream's SendAsync row (default: ${default})."`
	SendSessions    int           `default:"100" placeholder:"N" help:"Sessions send-stream and send-batch send to (default: ${default})."`
	SendItems       int           `placeholder:"N" help:"Items a SendStream request or SendBatch call carries, 1..10000 (default: 1024 for SendStream, as backend.Sender batches; 256 for SendBatch)."`
	SendInFlight    int           `default:"4" placeholder:"N" help:"SendStream requests or SendBatch calls awaiting their answer at once (default: ${default})."`
	ConsumeConns    int           `default:"8" placeholder:"N" help:"Clients sending in consume (default: ${default})."`
	ResumeSessions  int           `default:"1000" placeholder:"N" help:"Resumable sessions of resume (default: ${default})."`
	FloodSessions   int           `default:"30" placeholder:"N" help:"Clients of flood's attack, each flooding 0-byte frames without reading; its second run's --max-memory is half of what their queue bounds allow (default: ${default})."`
	ResumeCuts      int           `default:"3" placeholder:"N" help:"Times resume's proxy cuts every connection (default: ${default})."`
	ResumeCutEvery  time.Duration `default:"2s" help:"Traffic in resume before each cut (counted from the last session's resume from the cut before) and after the last; its no-faults run lasts (cuts+1) times it (default: ${default})."`
	Addr            string        `placeholder:"HOST:PORT" help:"Drive a running gateway's data plane instead of starting one in-process (its handler must be echo for the echo scenario)."`
	ControlAddr     string        `placeholder:"HOST:PORT" help:"The running gateway's control plane (plaintext gRPC), for outbound's SendAsync and close."`
	NoProgress      bool          `help:"No progress bar (it is off anyway when stderr is not a terminal or with --json)."`
	CPUProfile      string        `name:"cpuprofile" type:"path" placeholder:"FILE" help:"Write a CPU profile of this process (load clients, baselines, in-process gateway; not connections' client process) to FILE, for go tool pprof; samples are labelled by step. The backend process of send-stream, send-batch and consume writes its own to FILE.backend."`
}

// Validate checks what kong cannot.
func (c *benchCmd) Validate() error {
	for _, p := range c.Payload {
		if p < 0 || p > wire.MaxPayload {
			return fmt.Errorf("--payload %d out of range 0..%d", p, wire.MaxPayload)
		}
	}
	if c.Rounds < 1 {
		return fmt.Errorf("--rounds must be positive, got %d", c.Rounds)
	}
	if c.SendItems < 0 || c.SendItems > 10000 {
		return fmt.Errorf("--send-items must be 1..10000 (0: each scenario's default), got %d", c.SendItems)
	}
	for name, v := range map[string]int{"--send-sessions": c.SendSessions, "--send-in-flight": c.SendInFlight, "--consume-conns": c.ConsumeConns,
		"--resume-sessions": c.ResumeSessions, "--resume-cuts": c.ResumeCuts, "--flood-sessions": c.FloodSessions} {
		if v < 1 {
			return fmt.Errorf("%s must be positive, got %d", name, v)
		}
	}
	if c.ResumeCutEvery <= 0 {
		return fmt.Errorf("--resume-cut-every must be positive, got %s", c.ResumeCutEvery)
	}
	interleaved := c.Scenario != "echo" && c.Scenario != "close" && c.Scenario != "connections" && c.Scenario != "resume"
	if interleaved && c.Duration/time.Duration(c.Rounds) < 100*time.Millisecond {
		return fmt.Errorf("--duration %s over --rounds %d leaves rounds under 100ms; lengthen --duration or lower --rounds", c.Duration, c.Rounds)
	}
	for _, k := range c.Sessions {
		if k < 1 {
			return fmt.Errorf("--sessions must be positive, got %d", k)
		}
	}
	if c.ControlAddr != "" && c.Addr == "" {
		return errors.New("--control-addr needs --addr")
	}
	return nil
}

// Run runs the scenarios and prints the results; it fails on packet loss.
func (c *benchCmd) Run(rt *runtime) error {
	// The in-process gateway logs every connection at info: quiet it to
	// warnings unless debug is asked for.
	g := *rt.globals
	if g.LogLevel == "info" {
		g.LogLevel = "warn"
	}
	log, err := g.logger(rt.stderr)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program for the client process: %w", err)
	}
	opts := loadgen.Options{
		Scenarios:       []string{c.Scenario},
		Duration:        c.Duration,
		Rounds:          c.Rounds,
		Conns:           c.Conns,
		Payloads:        c.Payload,
		Sessions:        c.Sessions,
		DialConcurrency: c.DialConcurrency,
		Samples:         c.Samples,
		QueuedPackets:   c.Queued,
		RPCConcurrency:  c.RPCConcurrency,
		Addr:            c.Addr,
		ControlAddr:     c.ControlAddr,
		ChildArgv:       []string{exe, "--log-level", rt.globals.LogLevel, "bench-client"},
		BackendArgv:     []string{exe, "--log-level", rt.globals.LogLevel, "bench-backend"},
		SendSessions:    c.SendSessions,
		SendItems:       c.SendItems,
		SendInFlight:    c.SendInFlight,
		ConsumeConns:    c.ConsumeConns,
		ResumeSessions:  c.ResumeSessions,
		FloodSessions:   c.FloodSessions,
		ResumeCuts:      c.ResumeCuts,
		ResumeCutEvery:  c.ResumeCutEvery,
		Logger:          log,
	}
	if c.Scenario == "all" {
		opts.Scenarios = loadgen.AllScenarios
	}
	if f, ok := rt.stderr.(*os.File); ok && !c.JSON && !c.NoProgress && term.IsTerminal(int(f.Fd())) {
		opts.Progress = f
	}
	if c.CPUProfile != "" {
		opts.BackendArgv = append(opts.BackendArgv, "--cpuprofile", c.CPUProfile+".backend")
		stop, err := startCPUProfile(c.CPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	res, runErr := loadgen.Run(rt.ctx, opts)
	if res != nil {
		if c.JSON {
			enc := json.NewEncoder(rt.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(res); err != nil {
				return err
			}
		} else if err := loadgen.WriteTable(rt.stdout, res); err != nil {
			return err
		}
	}
	return runErr
}

// startCPUProfile profiles the CPU into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// benchClientCmd is the client process of `bench --scenario connections`.
type benchClientCmd struct{}

// Run serves the parent bench over stdin and stdout.
func (c *benchClientCmd) Run(rt *runtime) error {
	log, err := rt.globals.logger(rt.stderr)
	if err != nil {
		return err
	}
	return loadgen.RunChild(rt.ctx, rt.stdin, rt.stdout, log)
}

// benchBackendCmd is the backend process of `bench --scenario send-stream`,
// send-batch and consume.
type benchBackendCmd struct {
	CPUProfile string `name:"cpuprofile" type:"path" placeholder:"FILE" help:"Write a CPU profile of this process to FILE."`
}

// Run serves the parent bench over stdin and stdout.
func (c *benchBackendCmd) Run(rt *runtime) error {
	log, err := rt.globals.logger(rt.stderr)
	if err != nil {
		return err
	}
	if c.CPUProfile != "" {
		stop, err := startCPUProfile(c.CPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	return loadgen.RunBackend(rt.ctx, rt.stdin, rt.stdout, log)
}
