package loadgen

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/gateway"
)

// scenario is one measurement of the tool: what runs it and how many
// progress steps it takes.
type scenario struct {
	name  string
	run   func(*env, context.Context) error
	steps func(*env) int
}

// scenarios is the one list of the tool's scenarios, in the order "all"
// runs them; the CLI's --scenario values, its help and the table of
// docs/performance.md come from it. connections comes first: it measures
// this process's memory, and the goroutines and buffers the throughput
// scenarios leave for reuse would hide part of what a new connection
// costs (the raw baseline's most, as it is measured first).
var scenarios = []scenario{
	{"connections", (*env).connections, func(e *env) int {
		n := 3 * len(e.opts.Sessions)
		for _, k := range e.opts.Sessions {
			if k <= handshakeRoundsMax {
				n += 2 * (e.opts.Rounds - 1)
			}
		}
		return n
	}},
	{"inbound", (*env).inbound, func(e *env) int { return 2 * e.opts.Rounds * len(e.opts.Payloads) }},
	{"outbound", (*env).outbound, func(e *env) int { return 4 * e.opts.Rounds }},
	{"echo", (*env).echo, func(*env) int { return 2 }},
	{"close", (*env).closeScenario, func(*env) int { return 7 }},
	{"send-stream", (*env).sendStreamScenario, func(e *env) int { return 2 * e.opts.Rounds * (len(e.opts.Payloads) + 1) }},
	{"send-batch", (*env).sendBatchScenario, func(e *env) int { return 2 * e.opts.Rounds * len(e.opts.Payloads) }},
	{"consume", (*env).consume, (*env).consumeSteps},
}

// explicitScenarios run only when asked for by name, not in "all": they
// take long at their defaults.
var explicitScenarios = []scenario{
	{"resume", (*env).resume, func(*env) int { return 2 }},
	{"flood", (*env).flood, func(*env) int { return 2 }},
}

func names(scs []scenario) []string {
	out := make([]string, len(scs))
	for i, sc := range scs {
		out[i] = sc.name
	}
	return out
}

// AllScenarios are the names of the scenarios "all" runs, in its order.
var AllScenarios = names(scenarios)

// Scenarios are every scenario's name: AllScenarios, then the ones that
// run only when named.
var Scenarios = append(slices.Clone(AllScenarios), names(explicitScenarios)...)

// scenarioNamed returns the scenario called name.
func scenarioNamed(name string) (scenario, bool) {
	for _, scs := range [][]scenario{scenarios, explicitScenarios} {
		if i := slices.IndexFunc(scs, func(sc scenario) bool { return sc.name == name }); i >= 0 {
			return scs[i], true
		}
	}
	return scenario{}, false
}

// Options configure a run. The zero value of a field means its default.
type Options struct {
	// Scenarios to run (names from Scenarios). Required.
	Scenarios []string
	// Duration of each throughput and echo measurement. Default 3 s.
	// Throughput is measured in Rounds alternating rounds of baseline and
	// gateway, which share it.
	Duration time.Duration
	// Rounds is how many alternating rounds each side of a throughput
	// figure is measured in. Default 3.
	Rounds int
	// Conns is how many connections the inbound, outbound and echo
	// scenarios use. Default 2 (1 for echo unless set).
	Conns int
	// Payloads are the Data payload sizes of inbound; outbound and echo use
	// the first. Default 64 and 1024.
	Payloads []int
	// Sessions are the idle session counts of connections. Default 1000
	// and 10000.
	Sessions []int
	// DialConcurrency is how many handshakes the connections scenario's
	// client process runs at once. Default 64.
	DialConcurrency int
	// Samples is how many operations close times per case. Default 200.
	Samples int
	// QueuedPackets is the queue depth of close's full-queue cases.
	// Default 1000.
	QueuedPackets int
	// RPCConcurrency is how many SendAsync (and echo) calls are in flight
	// at once. Default 16.
	RPCConcurrency int
	// Addr and ControlAddr name a running gateway to drive instead of an
	// in-process one. See docs/performance.md for what each scenario
	// measures then.
	Addr, ControlAddr string
	// ChildArgv starts this program as the connections scenario's client
	// process, which runs RunChild. Required for connections.
	ChildArgv []string
	// BackendArgv starts this program as the backend process of
	// send-stream, send-batch and consume, which runs RunBackend.
	// Required for them.
	BackendArgv []string
	// SendSessions is how many sessions send-stream and send-batch send
	// to. Default 100.
	SendSessions int
	// SendItems is how many items a SendStream request and a SendBatch
	// call carry. Default: 1,024 for SendStream (backend.Sender's batch),
	// 256 for SendBatch. SendInFlight is how many await their answer at
	// once. Default 4 (backend.Sender's).
	SendItems, SendInFlight int
	// ConsumeConns is how many clients send in consume. Default 8.
	ConsumeConns int
	// ResumeSessions is how many resumable sessions resume runs. Default
	// 1000.
	ResumeSessions int
	// ResumeCuts is how many times resume cuts every connection, and
	// ResumeCutEvery the traffic before each cut (from the last session's
	// resume from the one before) and after the last. Defaults 3 and 2 s.
	ResumeCuts     int
	ResumeCutEvery time.Duration
	// FloodSessions is how many clients flood's attack uses. Default 30.
	FloodSessions int
	// Logger receives the gateway's logs and the tool's. Default: discard.
	Logger *slog.Logger
	// Progress, when set, receives progress (on a terminal: a bar).
	Progress io.Writer
}

func (o *Options) setDefaults() error {
	if len(o.Scenarios) == 0 {
		return errors.New("loadgen: no scenario")
	}
	for _, s := range o.Scenarios {
		if _, ok := scenarioNamed(s); !ok {
			return fmt.Errorf("loadgen: unknown scenario %q (want one of %v)", s, Scenarios)
		}
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Conns <= 0 {
		o.Conns = 2
	}
	if len(o.Payloads) == 0 {
		o.Payloads = []int{64, 1024}
	}
	if len(o.Sessions) == 0 {
		o.Sessions = []int{1000, 10000}
	}
	if o.DialConcurrency <= 0 {
		o.DialConcurrency = 64
	}
	if o.Samples <= 0 {
		o.Samples = 200
	}
	if o.QueuedPackets <= 0 {
		o.QueuedPackets = 1000
	}
	if o.RPCConcurrency <= 0 {
		o.RPCConcurrency = 16
	}
	o.SendSessions = cmp.Or(max(o.SendSessions, 0), 100)
	o.SendItems = max(o.SendItems, 0)
	o.SendInFlight = cmp.Or(max(o.SendInFlight, 0), 4)
	o.ConsumeConns = cmp.Or(max(o.ConsumeConns, 0), 8)
	o.ResumeSessions = cmp.Or(max(o.ResumeSessions, 0), 1000)
	o.ResumeCuts = cmp.Or(max(o.ResumeCuts, 0), 3)
	o.ResumeCutEvery = cmp.Or(max(o.ResumeCutEvery, 0), 2*time.Second)
	o.FloodSessions = cmp.Or(max(o.FloodSessions, 0), 30)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Figure is one measured figure beside its baseline.
type Figure struct {
	Scenario string  `json:"scenario"`
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Value    float64 `json:"value"`
	// Baseline names what Value is compared with; empty when nothing is.
	Baseline      string  `json:"baseline,omitempty"`
	BaselineValue float64 `json:"baseline_value,omitempty"`
	// Ratio is Value / BaselineValue, or, for a figure measured in
	// interleaved rounds, the median of the per-round ratios, which range
	// from RatioMin to RatioMax. Value and BaselineValue are then each
	// side's median.
	Ratio    float64 `json:"ratio,omitempty"`
	RatioMin float64 `json:"ratio_min,omitempty"`
	RatioMax float64 `json:"ratio_max,omitempty"`
	Rounds   int     `json:"rounds,omitempty"`
	// Target is the target, as text; Met says whether it held.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
}

// Loss is one zero-loss check: what was sent against what was processed
// (by the handler) or received (by the clients).
type Loss struct {
	Scenario  string `json:"scenario"`
	Name      string `json:"name"`
	Sent      uint64 `json:"sent"`
	Processed uint64 `json:"processed"`
	Lost      uint64 `json:"lost"`
	// Detail says how delivery was proved.
	Detail string `json:"detail,omitempty"`
}

// Result is a whole run.
type Result struct {
	Machine   Machine       `json:"machine"`
	Target    string        `json:"target"` // "in-process" or the addresses driven
	Scenarios []string      `json:"scenarios"`
	Duration  time.Duration `json:"duration_ns"`
	Figures   []Figure      `json:"figures"`
	Loss      []Loss        `json:"loss"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	// Lossless is false if any check lost a packet.
	Lossless bool `json:"lossless"`
}

// ErrLoss is returned (wrapped) by Run when a scenario lost packets.
var ErrLoss = errors.New("loadgen: packets were lost")

// env is what the scenarios share.
type env struct {
	opts    Options
	log     *slog.Logger
	cert    tls.Certificate
	srvTLS  *tls.Config // raw baseline and in-process gateway
	cliTLS  *tls.Config
	res     *Result
	prog    *progress
	started time.Time
}

// Run runs the scenarios and returns the figures. The error wraps ErrLoss
// when packets were lost; the Result is complete all the same.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	defer pprof.SetGoroutineLabels(ctx) // the steps relabel this goroutine
	gateway.RaiseFileLimit(opts.Logger)
	cert, _, _, err := devcert.Generate()
	if err != nil {
		return nil, err
	}
	e := &env{
		opts:    opts,
		log:     opts.Logger,
		cert:    cert,
		srvTLS:  &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true},
		cliTLS:  &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, //nolint:gosec // a load client on loopback; the raw baseline does the same
		res:     &Result{Machine: machine(), Scenarios: opts.Scenarios, Duration: opts.Duration, Target: "in-process", Lossless: true},
		started: time.Now(),
	}
	if opts.Addr != "" {
		e.res.Target = "data plane " + opts.Addr
		if opts.ControlAddr != "" {
			e.res.Target += ", control plane " + opts.ControlAddr
		}
	}
	e.prog = newProgress(opts.Progress, e.steps())
	defer e.prog.finish()
	for _, name := range opts.Scenarios {
		if err := ctx.Err(); err != nil {
			return e.res, err
		}
		sc, _ := scenarioNamed(name) // checked by setDefaults
		err := sc.run(e, ctx)
		if err != nil {
			return e.res, fmt.Errorf("scenario %s: %w", name, err)
		}
	}
	e.res.Elapsed = time.Since(e.started)
	for _, l := range e.res.Loss {
		if l.Lost > 0 {
			e.res.Lossless = false
		}
	}
	if !e.res.Lossless {
		return e.res, ErrLoss
	}
	return e.res, nil
}

// steps counts the progress steps of the chosen scenarios.
func (e *env) steps() int {
	n := 0
	for _, name := range e.opts.Scenarios {
		sc, _ := scenarioNamed(name)
		n += sc.steps(e)
	}
	return n
}

func (e *env) figure(f Figure) {
	if f.BaselineValue != 0 && f.Ratio == 0 {
		f.Ratio = f.Value / f.BaselineValue
	}
	e.res.Figures = append(e.res.Figures, f)
}

// target evaluates a target on a figure already added: ok reports it held.
func (e *env) target(text string, ok bool) {
	f := &e.res.Figures[len(e.res.Figures)-1]
	f.Target, f.Met = text, &ok
}

func (e *env) loss(l Loss) {
	if l.Sent > l.Processed {
		l.Lost = l.Sent - l.Processed
	}
	e.res.Loss = append(e.res.Loss, l)
}

// key returns the deterministic Ed25519 key number i of a run: distinct
// keys are distinct sessions.
func key(run, i int) ed25519.PrivateKey {
	var seed [ed25519.SeedSize]byte
	copy(seed[:], "tlsgate-bench")
	binary.BigEndian.PutUint32(seed[20:], uint32(run))
	binary.BigEndian.PutUint64(seed[24:], uint64(i))
	return ed25519.NewKeyFromSeed(seed[:])
}

// runID makes each gateway target's keys distinct from the previous
// target's, so that no session is taken over by accident.
var runID = int(time.Now().UnixNano() & 0x7fffffff)

func nextRun() int {
	runID++
	return runID
}

// gatewayFor starts the in-process gateway, or describes the external one.
func (e *env) gatewayFor(ctx context.Context, fallback server.Handler) (*target, error) {
	if e.opts.Addr != "" {
		return &target{addr: e.opts.Addr, ctlAddr: e.opts.ControlAddr}, nil
	}
	return startGateway(ctx, e.cert, fallback, e.log)
}
