package loadgen

import (
	"context"
	"slices"
	"time"
)

// A measure runs one round of a throughput measurement for d and returns
// its rate.
type measure func(ctx context.Context, d time.Duration) (float64, error)

// rounds are a figure's interleaved measurements: rates[i] of the gateway
// and base[i] of its baseline were measured back to back.
type rounds struct {
	gw, base []float64
}

// interleave measures the gateway against its baseline in Rounds
// alternating rounds of Duration/Rounds each: baseline then gateway, then
// gateway then baseline, and so on. A change in the machine's load (these
// machines are shared) then moves both sides of a pair, and the median of
// the per-pair ratios shrugs off a pair it spoiled; one long measurement
// of each side, a few seconds apart, would not. stepBase and stepGW name
// the progress steps (and the CPU profile's labels).
func (e *env) interleave(ctx context.Context, stepBase, stepGW string, base, gw measure) (rounds, error) {
	return e.interleaveRounds(ctx, 0, stepBase, stepGW, base, gw)
}

// interleaveRounds is interleave's rounds from round first on (a caller
// that measured round 0 itself asks for the rest).
func (e *env) interleaveRounds(ctx context.Context, first int, stepBase, stepGW string, base, gw measure) (rounds, error) {
	d := e.opts.Duration / time.Duration(e.opts.Rounds)
	var r rounds
	for i := first; i < e.opts.Rounds; i++ {
		sides := []struct {
			step string
			m    measure
			out  *[]float64
		}{{stepBase, base, &r.base}, {stepGW, gw, &r.gw}}
		if i%2 == 1 {
			slices.Reverse(sides)
		}
		for _, s := range sides {
			e.prog.step(s.step)
			v, err := s.m(ctx, d)
			if err != nil {
				return r, err
			}
			*s.out = append(*s.out, v)
			e.prog.stepDone()
		}
	}
	return r, nil
}

// figure completes f from the rounds, with every rate scaled by scale:
// Value and BaselineValue are each side's median, Ratio the median of the
// per-pair ratios, with their minimum and maximum.
func (r rounds) figure(f Figure, scale float64) Figure {
	var ratios []float64
	for i := range r.gw {
		if r.base[i] > 0 { // a round too short to count anything has no ratio
			ratios = append(ratios, r.gw[i]/r.base[i])
		}
	}
	f.Value, f.BaselineValue = median(r.gw)*scale, median(r.base)*scale
	if len(ratios) > 0 {
		f.Ratio, f.RatioMin, f.RatioMax = median(ratios), slices.Min(ratios), slices.Max(ratios)
	}
	f.Rounds = len(r.gw)
	return f
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}
