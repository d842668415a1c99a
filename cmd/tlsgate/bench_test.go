package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchJSON runs `tlsgate bench` in-process on a tiny echo scenario:
// --json prints a machine-readable result and no progress bar.
func TestBenchJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"bench", "--scenario", "echo", "--json", "--duration", "50ms"}, strings.NewReader(""), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	var res struct {
		Figures []struct {
			Scenario string  `json:"scenario"`
			Ratio    float64 `json:"ratio"`
		} `json:"figures"`
		Lossless bool `json:"lossless"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.String())
	}
	if !res.Lossless || len(res.Figures) == 0 || res.Figures[0].Scenario != "echo" || res.Figures[0].Ratio <= 0 {
		t.Errorf("result %+v", res)
	}
}

// TestBenchTable: without --json, a table of figures beside baselines.
func TestBenchTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"bench", "--scenario", "inbound", "--duration", "300ms", "--payload", "64"}, strings.NewReader(""), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	// 3 rounds of 100 ms: the ratio with its range, e.g. "0.72 (0.70-0.75)".
	for _, want := range []string{"BASELINE", "RATIO", "raw TLS loop", "no packet lost", ") "} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
}

// TestBenchRoundsTooShort: rounds under 100 ms are refused as a usage
// error, naming both flags, before anything runs.
func TestBenchRoundsTooShort(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"bench", "--scenario", "inbound", "--duration", "50ms"}, strings.NewReader(""), &stdout, &stderr)
	if code != 80 || !strings.Contains(stderr.String(), "--duration 50ms over --rounds 3 leaves rounds under 100ms") || strings.Contains(stdout.String(), "SCENARIO") {
		t.Fatalf("exit %d (want 80), stdout %q, stderr:\n%s", code, stdout.String(), stderr.String())
	}
}
