package loadgen_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/loadgen"
)

// TestPerformanceDocTablesListEveryScenario: each scenario table of
// docs/performance.md has one row per scenario of loadgen.Scenarios, and
// no other.
func TestPerformanceDocTablesListEveryScenario(t *testing.T) {
	doc, err := os.ReadFile("../../docs/performance.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `([a-z-]+)` \\|")
	want := slices.Sorted(slices.Values(loadgen.Scenarios))
	tables := 0
	var names []string
	inTable := false
	for line := range strings.Lines(string(doc)) {
		switch {
		case strings.HasPrefix(line, "| scenario | measures |"), strings.HasPrefix(line, "| scenario | with `--addr`"):
			inTable, names = true, nil
		case inTable && !strings.HasPrefix(line, "|"):
			inTable = false
			tables++
			if slices.Sort(names); !slices.Equal(names, want) {
				t.Errorf("table %d of docs/performance.md lists %v, want %v", tables, names, want)
			}
		case inTable:
			if m := row.FindStringSubmatch(line); m != nil {
				names = append(names, m[1])
			}
		}
	}
	if tables != 2 {
		t.Fatalf("found %d scenario tables in docs/performance.md, want 2", tables)
	}
}
