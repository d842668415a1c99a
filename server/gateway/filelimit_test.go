package gateway

import (
	"math"
	"testing"
)

// TestMaxConnsIsFittedToTheFileLimit: MaxConns above what the
// file-descriptor limit holds, less its reserve, is lowered to that; what
// fits is kept; -1 (no limit) gets the fit too; an unknown limit (0)
// changes nothing.
func TestMaxConnsIsFittedToTheFileLimit(t *testing.T) {
	for _, tc := range []struct {
		maxConns int
		limit    uint64
		want     int
		reserve  uint64
	}{
		{100000, 1024, 768, 256},          // a common default soft limit: the minimum reserve
		{100000, 20000, 18000, 2000},      // 10% of the limit
		{100000, 1 << 20, 100000, 104850}, // fits: kept
		{943726, 1 << 20, 943726, 104850}, // exactly what fits
		{943727, 1 << 20, 943726, 104850}, // one more does not
		{-1, 1 << 20, 943726, 104850},     // no limit: what fits
		{100000, 300, 150, 150},           // a tiny limit: half of it
		{1, 2, 1, 1},                      // the least: one connection
		{100000, 0, 100000, 0},            // unknown limit
		{-1, 0, -1, 0},                    // unknown limit: no limit stays
		{-1, math.MaxUint64, -1, math.MaxUint64 / 100 * FileReservePercent}, // more descriptors than any int
	} {
		got, reserve := fitMaxConns(tc.maxConns, tc.limit)
		if got != tc.want || reserve != tc.reserve {
			t.Errorf("fitMaxConns(%d, limit %d) = %d, reserve %d; want %d, reserve %d", tc.maxConns, tc.limit, got, reserve, tc.want, tc.reserve)
		}
	}
}
