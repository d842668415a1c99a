package main

import (
	"strings"
	"testing"
)

func TestLineScanner(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"\n", []string{""}},
		{"a\nb\n", []string{"a", "b"}},
		{"a\r\n\nlast", []string{"a\r", "", "last"}},
	} {
		sc := newLineScanner(strings.NewReader(tc.in), 10)
		var got []string
		for sc.Scan() {
			got = append(got, sc.Text())
		}
		if sc.Err() != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("lines of %q = %q, %v; want %q", tc.in, got, sc.Err(), tc.want)
		}
	}
}

func TestLineScannerTooLong(t *testing.T) {
	sc := newLineScanner(strings.NewReader("0123456789\n01234567890\n"), 10)
	if !sc.Scan() || sc.Text() != "0123456789" {
		t.Fatalf("a line of exactly the maximum was refused: %v", sc.Err())
	}
	if sc.Scan() {
		t.Fatalf("a line over the maximum was accepted: %q", sc.Text())
	}
	if err := lineError(sc.Err(), 2); err == nil || !strings.Contains(err.Error(), "stdin line 2 is longer than the maximum payload") {
		t.Errorf("lineError = %v", err)
	}
}
