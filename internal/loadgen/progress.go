package loadgen

import (
	"context"
	"io"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressDelay: a bar appears only on runs longer than this.
const progressDelay = 2 * time.Second

// progress shows a bar of the run's steps on w (a terminal), refreshed
// while a step runs, and only once the run has lasted progressDelay.
type progress struct {
	bar  *progressbar.ProgressBar
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// delayedWriter drops what is written before its start time.
type delayedWriter struct {
	w     io.Writer
	start time.Time
}

func (d delayedWriter) Write(p []byte) (int, error) {
	if time.Now().Before(d.start) {
		return len(p), nil
	}
	return d.w.Write(p)
}

func newProgress(w io.Writer, steps int) *progress {
	p := &progress{}
	if w == nil || steps == 0 {
		return p
	}
	p.bar = progressbar.NewOptions(steps,
		progressbar.OptionSetWriter(delayedWriter{w: w, start: time.Now().Add(progressDelay)}),
		progressbar.OptionSetDescription("starting"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetWidth(20),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionShowDescriptionAtLineEnd(),
	)
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() { // refresh the elapsed time while a step runs
		defer close(p.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = p.bar.Add(0)
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

// step starts the next step, named, and labels it (see label).
func (p *progress) step(name string) {
	label(name)
	if p.bar != nil {
		p.bar.Describe(name)
	}
}

// stepDone ends a step.
func (p *progress) stepDone() {
	if p.bar != nil {
		_ = p.bar.Add(1)
	}
}

func (p *progress) finish() {
	if p.bar == nil {
		return
	}
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		_ = p.bar.Finish()
		_ = p.bar.Clear()
	})
}

// label labels the calling goroutine with a step's name, and with it every
// goroutine it starts from then on (load clients, servers and their
// connections), so that a CPU profile of the run (`tlsgate bench
// --cpuprofile`) can be split by step:
// `go tool pprof -tagfocus 'step=inbound 64 B: gateway' ...`. A server
// that outlives one step is labelled, before it starts, with the step its
// work belongs to.
func label(step string) {
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("step", step)))
}
