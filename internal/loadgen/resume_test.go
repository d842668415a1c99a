package loadgen_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/loadgen"
)

// TestResumeScenario: 20 resumable sessions, their connections cut twice
// with echoes flowing: nothing is lost, duplicated or reordered, no
// resume is a gap, and every session resumed after each cut.
func TestResumeScenario(t *testing.T) {
	const sessions, cuts = 20, 2
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res, err := loadgen.Run(ctx, loadgen.Options{
		Scenarios:       []string{"resume"},
		Payloads:        []int{64},
		DialConcurrency: 8,
		ResumeSessions:  sessions,
		ResumeCuts:      cuts,
		ResumeCutEvery:  200 * time.Millisecond,
	})
	if err != nil {
		if res != nil {
			for _, l := range res.Loss {
				t.Logf("loss check %+v", l)
			}
		}
		t.Fatal(err)
	}
	var table strings.Builder
	if err := loadgen.WriteTable(&table, res); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
	if !res.Lossless || len(res.Loss) != 7 {
		t.Errorf("want 7 loss checks, none lost: %+v", res.Loss)
	}
	for _, l := range res.Loss {
		if l.Sent == 0 {
			t.Errorf("loss check %q checked nothing", l.Name)
		}
	}
	figures := map[string]loadgen.Figure{}
	for _, f := range res.Figures {
		figures[f.Name] = f
		if f.Value <= 0 || (f.Baseline != "" && f.BaselineValue <= 0) {
			t.Errorf("figure %+v: want positive values", f)
		}
	}
	if got := figures["resumes of the session with the fewest"].Value; got < cuts {
		t.Errorf("a session resumed %v times, want at least %d (one per cut)", got, cuts)
	}
	if got := figures["resumes"].Value; got < sessions*cuts {
		t.Errorf("%v resumes, want at least %d", got, sessions*cuts)
	}
	if f, ok := figures["resume time p99 (EventLost to the first packet after EventResumed)"]; !ok || f.Unit != "ms" {
		t.Errorf("no p99 resume time in %+v", res.Figures)
	}
}
