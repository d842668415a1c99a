package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	goclient "github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// resume: ResumeSessions sessions of the Go client's resumable mode
// (client.DialResumable) reach a gateway with the echo handler through a
// cutProxy. Each sends numbered Data packets, at most resumeWindow of
// them awaiting their echo, and checks that the echoes come back exactly
// once and in order. Two runs, each on a fresh gateway and proxy:
//
//   - no faults: traffic for (ResumeCuts+1) × ResumeCutEvery;
//   - cut: the same traffic, and ResumeCutEvery after the start, then
//     ResumeCutEvery after the last session resumed from the previous cut,
//     the proxy cuts every connection, ResumeCuts times; the run ends
//     ResumeCutEvery after the last resume.
//
// It reports the echoes/s of both runs and their ratio, the resumes/s of
// the reconnect storms (all sessions reconnecting at once), the resume time
// (from the client's EventLost to the first packet received on the resumed
// connection) and, as loss checks, every echo exactly once in order, every
// packet processed by the handler exactly once, and no gap.
func (e *env) resume(ctx context.Context) error {
	n := e.opts.ResumeSessions
	perSession := uint64(4) // the client's socket, the proxy's two, the gateway's
	if e.opts.Addr != "" {
		perSession = 3
	}
	if lim := fileLimit(); lim > 0 && uint64(n)*perSession+256 > lim {
		return fmt.Errorf("RLIMIT_NOFILE is %d, too low for %d resumable sessions through the proxy (%d descriptors each in this process): lower --resume-sessions or raise the hard limit (ulimit -Hn)", lim, n, perSession)
	}
	size := max(e.opts.Payloads[0], 8) // the first 8 bytes carry the packet's number
	length := time.Duration(e.opts.ResumeCuts+1) * e.opts.ResumeCutEvery
	name := fmt.Sprintf("resume %d sessions", n)

	e.prog.step(name + ": no faults")
	base, err := e.resumeRun(ctx, n, size, 0, length)
	if err != nil {
		return fmt.Errorf("no faults: %w", err)
	}
	e.prog.stepDone()
	cutName := fmt.Sprintf("cut every %s", e.opts.ResumeCutEvery)
	e.prog.step(name + ": " + cutName)
	got, err := e.resumeRun(ctx, n, size, e.opts.ResumeCuts, e.opts.ResumeCutEvery)
	if err != nil {
		return fmt.Errorf("%s: %w", cutName, err)
	}
	e.prog.stepDone()

	for _, r := range []struct {
		name string
		res  resumeResult
	}{{"no faults", base}, {cutName, got}} {
		e.loss(Loss{Scenario: "resume", Name: r.name + ": echoes", Sent: r.res.sent, Processed: r.res.inOrder,
			Detail: "echoes received in order, after every session's clean Close"})
		e.loss(Loss{Scenario: "resume", Name: r.name + ": exactly once, in order", Sent: r.res.inOrder + r.res.bad, Processed: r.res.inOrder,
			Detail: "echoes received (lost: received twice, or after a skip)"})
		if r.res.handled >= 0 {
			e.loss(Loss{Scenario: "resume", Name: r.name + ": processed by the handler", Sent: r.res.sent, Processed: uint64(r.res.handled),
				Detail: "counted by the gateway's echo handler"})
		}
	}
	e.loss(Loss{Scenario: "resume", Name: cutName + ": resumed without a gap", Sent: uint64(got.resumes), Processed: uint64(got.resumes - got.gaps),
		Detail: fmt.Sprintf("reconnects the server resumed (lost: resumed=false, a new epoch); %d reconnect attempts failed and were retried", got.failed)})

	rate := func(r resumeResult) float64 { return float64(r.inWindow) / r.window.Seconds() }
	e.figure(Figure{Scenario: "resume", Name: fmt.Sprintf("%d B echoes/s, %d sessions (%d awaited each), %d cuts", size, n, resumeWindow, e.opts.ResumeCuts),
		Unit: "packets/s", Value: rate(got), Baseline: "the same, no faults", BaselineValue: rate(base)})
	e.figure(Figure{Scenario: "resume", Name: fmt.Sprintf("resumes/s, %d sessions reconnecting at once", n), Unit: "resumes/s",
		Value: float64(n*e.opts.ResumeCuts) / got.storms.Seconds()})
	lat := summarize(got.resumeTimes)
	e.figure(Figure{Scenario: "resume", Name: "resume time p50 (EventLost to the first packet after EventResumed)", Unit: "ms", Value: ms(lat.p50)})
	e.figure(Figure{Scenario: "resume", Name: "resume time p99 (EventLost to the first packet after EventResumed)", Unit: "ms", Value: ms(lat.p99)})
	e.figure(Figure{Scenario: "resume", Name: "resume time max (EventLost to the first packet after EventResumed)", Unit: "ms", Value: ms(lat.max)})
	e.figure(Figure{Scenario: "resume", Name: "resumes", Unit: "resumes", Value: float64(got.resumes)})
	e.figure(Figure{Scenario: "resume", Name: "resumes of the session with the fewest", Unit: "resumes", Value: float64(got.fewest)})
	if len(got.resumeTimes) != got.resumes {
		return fmt.Errorf("%d resumes, but %d of them were followed by a packet", got.resumes, len(got.resumeTimes))
	}
	return nil
}

// resumeWindow is how many echoes a session of the resume scenario awaits
// at once: it sends the next packet when an echo frees a place.
const resumeWindow = 16

// resumeWaitMax bounds the wait for every session to resume after a cut.
const resumeWaitMax = time.Minute

// resumeResult is one run of the resume scenario.
type resumeResult struct {
	sent, inOrder, bad uint64 // over the whole run
	inWindow           uint64 // echoes in order within the measured window
	window             time.Duration
	handled            int64 // packets the in-process handler processed; -1 for a gateway elsewhere
	resumes, gaps      int
	fewest             int // resumes of the session with the fewest
	failed             int64
	storms             time.Duration // the cuts' reconnect storms: cut to the last session's resume
	resumeTimes        []time.Duration
}

// resumeRun is one run: n sessions through a fresh proxy to a fresh
// gateway, cut cuts times every every (traffic for every when cuts is 0).
func (e *env) resumeRun(ctx context.Context, n, size, cuts int, every time.Duration) (resumeResult, error) {
	var res resumeResult
	gw, err := e.gatewayFor(ctx, server.Echo{})
	if err != nil {
		return res, err
	}
	defer func() { _ = gw.stop() }()
	px, err := startCutProxy(ctx, gw.addr, e.log)
	if err != nil {
		return res, err
	}
	defer px.close()
	rr := &resumeRunState{n: int64(n), allResumed: make(chan struct{}, 1)}
	rr.sessions = make([]*resumeSession, n)
	stopAll := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, s := range rr.sessions {
			if s != nil && s.r != nil {
				wg.Go(func() { _ = s.r.Close(cctx) })
			}
		}
		wg.Wait()
	}
	if err := rr.dial(ctx, e, px.addr(), nextRun()); err != nil {
		stopAll()
		return res, err
	}

	sctx, cancelSends := context.WithCancel(ctx)
	stop := make(chan struct{})
	var senders sync.WaitGroup
	for _, s := range rr.sessions {
		senders.Go(func() { s.send(sctx, stop, size) })
	}
	endSends := func() {
		close(stop)
		cancelSends()
		senders.Wait()
	}
	start := time.Now()
	err = rr.traffic(ctx, px, cuts, every, &res)
	res.window = time.Since(start)
	for _, s := range rr.sessions {
		s.mu.Lock()
		res.inWindow += s.inOrder
		s.mu.Unlock()
	}
	endSends()
	if err != nil {
		stopAll()
		return res, err
	}

	// Close every session: the Goodbye exchange comes after every echo.
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range rr.sessions {
		wg.Go(func() { errs[i] = s.r.Close(cctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("closing the sessions: %w", err)
	}
	res.handled = -1
	if gw.inProcess() {
		res.handled = int64(gw.handled.n.load())
	}
	res.failed = rr.failed.Load()
	res.fewest = -1
	for _, s := range rr.sessions {
		if s.sendErr != nil {
			return res, fmt.Errorf("session %d: send: %w", s.r.ID(), s.sendErr)
		}
		s.mu.Lock()
		res.sent += s.sent
		res.inOrder += s.inOrder
		res.bad += s.bad
		res.resumes += s.resumes
		res.gaps += s.gaps
		res.resumeTimes = append(res.resumeTimes, s.resumeTimes...)
		if res.fewest < 0 || s.resumes < res.fewest {
			res.fewest = s.resumes
		}
		s.mu.Unlock()
	}
	if res.handled > int64(res.sent) {
		return res, fmt.Errorf("the handler processed %d packets, %d more than were sent: duplicates", res.handled, res.handled-int64(res.sent))
	}
	return res, nil
}

// resumeRunState is what a run's sessions share with its cutter.
type resumeRunState struct {
	n          int64
	sessions   []*resumeSession
	cutIndex   atomic.Int64 // the cut in progress, from 1
	cutAt      atomic.Int64 // its time, UnixNano
	resumedFor atomic.Int64 // sessions resumed from it
	lastResume atomic.Int64 // when the last of them did, UnixNano
	allResumed chan struct{}
	failed     atomic.Int64 // reconnect attempts failed
}

// dial opens the sessions, DialConcurrency handshakes at a time.
func (rr *resumeRunState) dial(ctx context.Context, e *env, addr string, run int) error {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sem := make(chan struct{}, e.opts.DialConcurrency)
	errs := make([]error, len(rr.sessions))
	var wg sync.WaitGroup
	for i := range rr.sessions {
		s := &resumeSession{rr: rr, credit: make(chan struct{}, resumeWindow), next: 1}
		rr.sessions[i] = s
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s.r, errs[i] = goclient.DialResumable(dctx, addr, key(run, i),
				goclient.WithTLSConfig(e.cliTLS), goclient.WithLogger(e.log),
				goclient.WithHandler(s.handle), goclient.WithResumeEvents(s.event))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// traffic lets the senders run for every, then, cuts times, cuts every
// connection, waits for every session to resume and lets them run for
// every again. It adds the storms' durations to res.
func (rr *resumeRunState) traffic(ctx context.Context, px *cutProxy, cuts int, every time.Duration, res *resumeResult) error {
	wait := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := wait(every); err != nil {
		return err
	}
	for k := 1; k <= cuts; k++ {
		rr.resumedFor.Store(0)
		rr.cutIndex.Store(int64(k))
		at := time.Now()
		rr.cutAt.Store(at.UnixNano())
		px.cut()
		t := time.NewTimer(resumeWaitMax)
		select {
		case <-rr.allResumed:
			t.Stop()
		case <-t.C:
			return fmt.Errorf("cut %d: %d of %d sessions resumed within %s", k, rr.resumedFor.Load(), rr.n, resumeWaitMax)
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		res.storms += time.Unix(0, rr.lastResume.Load()).Sub(at)
		if err := wait(every); err != nil {
			return err
		}
	}
	return nil
}

// resumeSession is one session of the resume scenario.
type resumeSession struct {
	rr      *resumeRunState
	r       *goclient.Resumable
	credit  chan struct{} // a place per echo awaited
	sent    uint64        // the sender's; read once it has returned
	sendErr error         // the same

	mu          sync.Mutex
	next        uint64 // the number of the next echo due
	inOrder     uint64
	bad         uint64 // echoes received twice or after a skip
	lostAt      time.Time
	awaitFirst  bool // resumed, and no packet yet
	resumeTimes []time.Duration
	resumes     int
	gaps        int
	countedCut  int64
}

// send sends numbered packets, each when a place is free, until stop.
func (s *resumeSession) send(ctx context.Context, stop <-chan struct{}, size int) {
	payload := make([]byte, size)
	for {
		select {
		case s.credit <- struct{}{}:
		case <-stop:
			return
		}
		binary.BigEndian.PutUint64(payload, s.sent+1)
		if err := s.r.Send(ctx, goclient.Data(payload)); err != nil {
			if ctx.Err() == nil {
				s.sendErr = err
			}
			return
		}
		s.sent++
	}
}

// handle is the session's goclient.WithHandler: it checks the echo's number
// and frees its place.
func (s *resumeSession) handle(p goclient.Packet) {
	var num uint64
	if p.Type == wire.TypeData && len(p.Payload) >= 8 {
		num = binary.BigEndian.Uint64(p.Payload)
	}
	s.mu.Lock()
	if s.awaitFirst {
		s.awaitFirst = false
		s.resumeTimes = append(s.resumeTimes, time.Since(s.lostAt))
	}
	ok := num != 0 && num == s.next
	if ok {
		s.next++
		s.inOrder++
	} else {
		s.bad++
	}
	s.mu.Unlock()
	if ok {
		select {
		case <-s.credit:
		default: // an echo of a packet not sent: counted above only
		}
	}
}

// event is the session's goclient.WithResumeEvents.
func (s *resumeSession) event(ev goclient.ResumeEvent) {
	switch ev.Kind {
	case goclient.EventLost:
		s.mu.Lock()
		s.lostAt, s.awaitFirst = time.Now(), false
		s.mu.Unlock()
	case goclient.EventReconnectFailed:
		s.rr.failed.Add(1)
	case goclient.EventResumed:
		if ev.Attempt == 0 {
			return // the first connection
		}
		now := time.Now()
		k := s.rr.cutIndex.Load()
		s.mu.Lock()
		s.resumes++
		if !ev.Resumed {
			s.gaps++
		}
		s.awaitFirst = true
		count := k > s.countedCut && s.lostAt.UnixNano() >= s.rr.cutAt.Load()
		if count {
			s.countedCut = k
		}
		s.mu.Unlock()
		if count && s.rr.resumedFor.Add(1) == s.rr.n {
			s.rr.lastResume.Store(now.UnixNano())
			select {
			case s.rr.allResumed <- struct{}{}:
			default:
			}
		}
	}
}
