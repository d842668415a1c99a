package loadgen

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints the figures, each beside its baseline and the ratio,
// then the loss checks.
func WriteTable(w io.Writer, r *Result) error {
	fmt.Fprintf(w, "tlsgate bench: %s; %d CPUs (%s), %s; %s per measurement; took %s\n\n",
		r.Target, r.Machine.CPUs, r.Machine.CPUModel, r.Machine.Go, r.Duration, r.Elapsed.Round(100*time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tFIGURE\tVALUE\tBASELINE\tBASELINE VALUE\tRATIO\tTARGET\tMET")
	for _, f := range r.Figures {
		ratio, base := "", ""
		if f.Baseline != "" {
			ratio, base = fmt.Sprintf("%.2f", f.Ratio), num(f.BaselineValue)+" "+f.Unit
			if f.Rounds > 1 {
				ratio += fmt.Sprintf(" (%.2f-%.2f)", f.RatioMin, f.RatioMax)
			}
		}
		met := ""
		if f.Met != nil {
			met = "no"
			if *f.Met {
				met = "yes"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%s\t%s\t%s\n", f.Scenario, f.Name, num(f.Value), f.Unit, f.Baseline, base, ratio, f.Target, met)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tLOSS CHECK\tSENT\tPROCESSED\tLOST\tHOW")
	for _, l := range r.Loss {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", l.Scenario, l.Name, l.Sent, l.Processed, l.Lost, l.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "no packet lost"
	if !r.Lossless {
		verdict = "PACKETS LOST"
	}
	_, err := fmt.Fprintf(w, "\n%s\n", verdict)
	return err
}

// num formats a figure with about four significant digits.
func num(v float64) string {
	switch {
	case v >= 1e4 || v <= -1e4:
		s := strconv.FormatFloat(v, 'f', 0, 64)
		return group(s)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// group puts thousands separators into an integer string.
func group(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
