package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestServeFitsMaxConnsToTheFileLimit: under a file-descriptor limit of
// 512 (soft 256), serve raises the soft limit to 512 and lowers the
// default --max-conns (100000) to 512 less the reserve of 256, saying so
// in one warning with the requested and effective values and the limit;
// a --max-conns that fits is left alone, without a word.
func TestServeFitsMaxConnsToTheFileLimit(t *testing.T) {
	t.Parallel()
	const script = `ulimit -n 512 && ulimit -Sn 256 && exec "$0" "$@"`
	for _, tc := range []struct {
		name  string
		flags []string
		want  string // the warning's values; "" for none
	}{
		{"default --max-conns", nil, "requested=100000 effective=256 file_limit=512 reserve=256"},
		{"--max-conns that fits", []string{"--max-conns", "200"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			argv := append([]string{"sh", "-c", script, binary(t), "serve", "--addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0",
				"--admin-addr", "127.0.0.1:0", "--dev-dir", t.TempDir()}, tc.flags...)
			p := startArgv(t, nil, nil, argv)
			p.waitLine(p.stdout, "admin listening on ")
			limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", p.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			for line := range strings.Lines(string(limits)) {
				if strings.HasPrefix(line, "Max open files") {
					if f := strings.Fields(line); len(f) < 5 || f[3] != "512" || f[4] != "512" {
						t.Errorf("serve's file limits: %q, want soft and hard 512", line)
					}
				}
			}
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := p.exitCode(); code != 0 {
				t.Fatalf("serve exited %d after SIGTERM", code)
			}
			<-p.stderr.eof
			var warnings []string
			for line := range strings.Lines(p.stderr.String()) {
				if strings.Contains(line, "file-descriptor limit") {
					warnings = append(warnings, line)
				}
			}
			switch {
			case tc.want == "" && len(warnings) != 0:
				t.Errorf("serve warned of the file limit for a --max-conns that fits: %q", warnings)
			case tc.want != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], "level=WARN") || !strings.Contains(warnings[0], tc.want)):
				t.Errorf("serve's file-limit warnings: %q, want one WARN line with %q", warnings, tc.want)
			}
		})
	}
}
