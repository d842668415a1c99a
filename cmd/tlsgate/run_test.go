package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRunHelp runs the command line in-process: --help exits 0 and shows
// every serve flag with its default and environment variable.
func TestRunHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "--help"}, strings.NewReader(""), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("serve --help exited %d; stderr:\n%s", code, stderr.String())
	}
	help := strings.Join(strings.Fields(stdout.String()), " ") // undo the wrapping
	for _, want := range []string{
		"--addr=HOST:PORT", "(default: :7223) ($TLSGATE_ADDR)",
		"--handler=\"echo\"", "echo,discard (default: echo) ($TLSGATE_HANDLER)",
		"(default: 65531) ($TLSGATE_MAX_PAYLOAD)",
		"(default: 4194304) ($TLSGATE_QUEUE_BYTES)",
		"(default: 5s) ($TLSGATE_HANDSHAKE_TIMEOUT)",
		"(default: 2s) ($TLSGATE_LINGER_TIMEOUT)",
		"(default: 10s) ($TLSGATE_DRAIN_TIMEOUT)",
		"(default: 15s) ($TLSGATE_SHUTDOWN_TIMEOUT)",
		"--allow-tls12", "($TLSGATE_ALLOW_TLS12)",
		"--session-tickets", "($TLSGATE_SESSION_TICKETS)",
		"--cert=FILE", "($TLSGATE_CERT)", "--key=FILE", "($TLSGATE_KEY)",
		"--dev-dir=DIR", "($TLSGATE_DEV_DIR)",
		"(default: info) ($TLSGATE_LOG_LEVEL)", "(default: text) ($TLSGATE_LOG_FORMAT)",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("serve --help lacks %q:\n%s", want, stdout.String())
		}
	}
}

// TestRunUsageError: a parse error exits 80 and names the flag, in-process.
func TestRunUsageError(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "--handler", "bogus"}, strings.NewReader(""), &stdout, &stderr)
	if code != 80 || !strings.Contains(stderr.String(), "--handler") {
		t.Errorf("exit %d, stderr %q; want 80 and a message naming --handler", code, stderr.String())
	}
}
