package main

// End-to-end tests: the real tlsgate binary, serve and client as
// subprocesses.

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/internal/keyfile"
	"github.com/tlsgate/tlsgate/wire"
)

// lines returns n distinct input lines, some of them awkward: empty, JSON,
// non-ASCII, with tabs and trailing blanks, and a '\r' that must be kept.
func lines(n int) []string {
	out := make([]string, n)
	for i := range out {
		switch i % 10 {
		case 3:
			out[i] = ""
		case 5:
			out[i] = fmt.Sprintf(`{"n": %d, "s": "café ☕"}`, i)
		case 7:
			out[i] = fmt.Sprintf("line\t%d with trailing blanks  \r", i)
		default:
			out[i] = fmt.Sprintf("line %04d", i)
		}
	}
	return out
}

func joinLines(ls []string) string { return strings.Join(ls, "\n") + "\n" }

func TestEndToEndEcho(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServe(t, "--dev-dir", dir)
	if len(srv.fingerprint) != 64 {
		t.Fatalf("serve printed dev certificate fingerprint %q, want 64 hex digits", srv.fingerprint)
	}

	for _, n := range []int{100, 5000} { // 5000: more than the client's send window
		t.Run(strconv.Itoa(n)+" lines", func(t *testing.T) {
			input := joinLines(lines(n))
			r := runTlsgate(t, input, "client", "--addr", srv.addr, "--dev-dir", dir)
			if r.code != 0 {
				t.Fatalf("client exited %d, want 0\nstderr:\n%s", r.code, r.stderr)
			}
			if r.stdout != input {
				t.Errorf("client stdout is not the %d lines echoed in order:\n got %d bytes, %q...\nwant %d bytes, %q...",
					n, len(r.stdout), head(r.stdout), len(input), head(input))
			}
			for _, want := range []string{
				"connected: session ",
				" server fingerprint " + srv.fingerprint + "\n",
				fmt.Sprintf("closed: outcome=clean initiator=local goodbye=normal reason=%q reconnect=false sent=%d received=%d\n", "reply to goodbye", n, n),
			} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("client stderr lacks %q:\n%s", want, r.stderr)
				}
			}
		})
	}

	t.Run("pinned with --fingerprint", func(t *testing.T) {
		// Another dev dir: no dev certificate there, so only the pin trusts.
		r := runTlsgate(t, "pinned\n", "client", "--addr", srv.addr, "--dev-dir", t.TempDir(), "--fingerprint", strings.ToUpper(srv.fingerprint))
		if r.code != 0 || r.stdout != "pinned\n" {
			t.Fatalf("client: exit %d, stdout %q; want 0 and the echo\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("line over the maximum payload", func(t *testing.T) {
		input := "ok\n" + strings.Repeat("x", wire.MaxPayload+1) + "\nnever sent\n"
		r := runTlsgate(t, input, "client", "--addr", srv.addr, "--dev-dir", dir)
		if r.code != 1 || r.stdout != "ok\n" {
			t.Errorf("client: exit %d, stdout %q; want 1 and only the first line echoed", r.code, head(r.stdout))
		}
		for _, want := range []string{"stdin line 2 is longer than the maximum payload", "closed: outcome=clean initiator=local"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("client stderr lacks %q:\n%s", want, r.stderr)
			}
		}
	})

	t.Run("wrong fingerprint", func(t *testing.T) {
		wrong := strings.Repeat("ab", 32)
		r := runTlsgate(t, "x\n", "client", "--addr", srv.addr, "--dev-dir", dir, "--fingerprint", wrong)
		if r.code != 1 || !strings.Contains(r.stderr, "fingerprint mismatch") || r.stdout != "" {
			t.Fatalf("client: exit %d, stdout %q; want 1, nothing echoed and a fingerprint mismatch\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
	})

	srv.stop()
}

func head(s string) string {
	if len(s) > 60 {
		return s[:60]
	}
	return s
}

func TestDevCertFingerprintStable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var fps []string
	for i, state := range []string{"created", "loaded"} {
		srv := startServe(t, "--dev-dir", dir)
		where, _ := srv.stdout.find("dev mode: self-signed certificate kept in ")
		if want := dir + " (" + state + ")"; where != want {
			t.Errorf("run %d: dev mode line says %q, want %q", i+1, where, want)
		}
		fps = append(fps, srv.fingerprint)
		srv.stop()
	}
	if fps[0] == "" || fps[0] != fps[1] {
		t.Fatalf("dev certificate fingerprint changed across runs with the same --dev-dir: %q, then %q", fps[0], fps[1])
	}
	if der, err := devcert.ReadCertificate(dir); err != nil || client.Fingerprint(der) != fps[0] {
		t.Errorf("fingerprint of %s = %q, %v; serve printed %q", devcert.CertFile, client.Fingerprint(der), err, fps[0])
	}
}

// TestDevCertBrokenIsReplaced: a dev certificate that a full disk left
// empty does not stop serve: it makes a new one and says why, and the
// client pins the new one from the same --dev-dir.
func TestDevCertBrokenIsReplaced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, devcert.CertFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, devcert.KeyFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, "--dev-dir", dir)
	where, _ := srv.stdout.find("dev mode: self-signed certificate kept in ")
	if !strings.HasPrefix(where, dir+" (replaced a broken one: ") || !strings.Contains(where, "do not load") {
		t.Errorf("dev mode line says %q, want the replacement and why", where)
	}
	r := runTlsgate(t, "hello\n", "client", "--addr", srv.addr, "--dev-dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "hello") {
		t.Errorf("client against the new certificate: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	srv.stop()
}

// TestServeSIGTERM checks the shutdown: serve exits 0, and a connected
// client gets Goodbye server_shutdown, says so and exits non-zero.
func TestServeSIGTERM(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServe(t, "--dev-dir", dir)

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdinW.Close() })
	cl := start(t, stdinR, "client", "--addr", srv.addr, "--dev-dir", dir)
	cl.waitLine(cl.stderr, "connected: ")
	if _, err := stdinW.WriteString("before shutdown\n"); err != nil {
		t.Fatal(err)
	}
	cl.waitLine(cl.stdout, "before shutdown")

	srv.stop()
	if code := cl.exitCode(); code != 1 {
		t.Errorf("client exited %d after the server shut down, want 1", code)
	}
	for _, want := range []string{
		"the server ended the connection: server_shutdown: ",
		"closed: outcome=clean initiator=remote goodbye=server_shutdown ",
	} {
		cl.waitLine(cl.stderr, want)
	}
}

// TestTakeover: a second client with the same key takes the session over;
// the first prints the takeover Error packet and Goodbye and exits 1.
func TestTakeover(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServe(t, "--dev-dir", dir)
	keyPath := filepath.Join(t.TempDir(), "shared.key")
	kg := runTlsgate(t, "", "keygen", "--out", keyPath)
	if kg.code != 0 {
		t.Fatalf("keygen exited %d:\n%s", kg.code, kg.stderr)
	}
	_, sid, _ := strings.Cut(kg.stdout, "session id: ")
	sid = strings.TrimSpace(sid)

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdinW.Close() })
	first := start(t, stdinR, "client", "--addr", srv.addr, "--dev-dir", dir, "--key", keyPath)
	if got := first.waitLine(first.stderr, "connected: session "); !strings.HasPrefix(got, sid+" ") {
		t.Fatalf("first client connected as %q, want session %s (from keygen)", got, sid)
	}

	second := runTlsgate(t, "from the second\n", "client", "--addr", srv.addr, "--dev-dir", dir, "--key", keyPath)
	if second.code != 0 || second.stdout != "from the second\n" {
		t.Fatalf("second client: exit %d, stdout %q\nstderr:\n%s", second.code, second.stdout, second.stderr)
	}
	if code := first.exitCode(); code != 1 {
		t.Errorf("taken-over client exited %d, want 1", code)
	}
	first.waitLine(first.stderr, fmt.Sprintf("error packet: code=session_taken_over pkt_type=0 error=%q", wire.TakeoverMessage))
	first.waitLine(first.stderr, "closed: outcome=clean initiator=remote goodbye=session_taken_over ")
	srv.stop()
}

// TestServeWithCertAndCA: serve with --cert/--key, client verifying with --ca.
func TestServeWithCertAndCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, certPEM, keyPEM, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, "--cert", certPath, "--key", keyPath, "--dev-dir", filepath.Join(dir, "unused"))
	if _, ok := srv.stdout.find("dev mode"); ok {
		t.Error("serve with --cert and --key says it is in dev mode")
	}
	fp, _ := srv.stdout.find("certificate fingerprint: ")
	r := runTlsgate(t, "verified\n", "client", "--addr", srv.addr, "--dev-dir", dir, "--ca", certPath)
	if r.code != 0 || r.stdout != "verified\n" || !strings.Contains(r.stderr, " server fingerprint "+fp+"\n") {
		t.Fatalf("client with --ca: exit %d, stdout %q\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	srv.stop()
	if _, err := os.Stat(filepath.Join(dir, "unused")); !os.IsNotExist(err) {
		t.Errorf("serve with --cert and --key touched --dev-dir: %v", err)
	}
}

func TestBadFlagValues(t *testing.T) {
	t.Parallel()
	hex64 := strings.Repeat("0", 64)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--handler", "bogus"}, `--handler must be one of "echo","discard" but got "bogus"`},
		{[]string{"serve", "--max-payload", "70000"}, "--max-payload must be between 1 and 65531"},
		{[]string{"serve", "--max-payload", "0"}, "--max-payload must be between 1 and 65531"},
		{[]string{"serve", "--queue-bytes", "100"}, "--queue-bytes must hold at least one full frame"},
		{[]string{"serve", "--handshake-timeout", "0s"}, "--handshake-timeout must be positive"},
		{[]string{"serve", "--linger-timeout=-1s"}, "--linger-timeout must be positive"},
		{[]string{"serve", "--drain-timeout", "soon"}, "--drain-timeout"},
		{[]string{"serve", "--shutdown-timeout", "0"}, "--shutdown-timeout must be positive"},
		{[]string{"serve", "--resume-window", "0s"}, "--resume-window must be positive, got 0s"},
		{[]string{"serve", "--resume-buffer", "0"}, "--resume-buffer must be positive, got 0"},
		{[]string{"serve", "--max-streams", "0"}, "--max-streams must be positive, got 0"},
		{[]string{"serve", "--max-streams=-5"}, "--max-streams must be positive, got -5"},
		{[]string{"serve", "--control-token", " "}, "--control-token must not start or end with whitespace"},
		{[]string{"serve", "--control-token", "short"}, "--control-token must be at least 16 bytes, got 5"},
		{[]string{"serve", "--control-addr", "0.0.0.0:0", "--control-token", "0123456789abcdef"}, "the bearer token would cross the network in the clear, to anyone who can read it; set --control-cert (or TLSGATE_CONTROL_CERT) or --insecure-control-token (or TLSGATE_INSECURE_CONTROL_TOKEN)"},
		{[]string{"serve", "--control-max-header-bytes", "10"}, "--control-max-header-bytes must be at least 1024"},
		{[]string{"serve", "--control-max-conns", "0"}, "--control-max-conns must be positive, got 0"},
		{[]string{"serve", "--control-keepalive-min-time", "0s"}, "--control-keepalive-min-time must be positive"},
		{[]string{"serve", "--cert", "cert.pem"}, "--cert and --key must be given together"},
		{[]string{"serve", "--log-level", "loud"}, "--log-level must be one of"},
		{[]string{"serve", "--log-format", "xml"}, "--log-format must be one of"},
		{[]string{"client", "--fingerprint", "zz"}, "--fingerprint must be a hex SHA-256"},
		{[]string{"client", "--fingerprint", hex64, "--ca", "ca.pem"}, "--fingerprint and --ca can't be used together"},
		{[]string{"client", "--encoding", "xml"}, "--encoding must be one of"},
		{[]string{"client", "--close-timeout", "0s"}, "--close-timeout must be positive"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			r := runTlsgate(t, "", append(tc.args, "--dev-dir", t.TempDir())...)
			if r.code != 80 {
				t.Errorf("exit %d, want 80 (usage error)", r.code)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, r.stderr)
			}
			if strings.Contains(r.stdout, "listening on") {
				t.Error("serve started listening despite the bad value")
			}
		})
	}
}

func TestClientWithoutDevCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := runTlsgate(t, "x\n", "client", "--addr", "127.0.0.1:1", "--dev-dir", dir)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	for _, want := range []string{"no dev certificate to pin in " + dir, "--fingerprint", "--ca"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

func TestKeygen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "client.key")

	r := runTlsgate(t, "", "keygen", "--dev-dir", dir) // default --out: <dev-dir>/client.key
	if r.code != 0 {
		t.Fatalf("keygen exited %d:\n%s", r.code, r.stderr)
	}
	key, err := keyfile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	want := fmt.Sprintf("wrote %s\npublic key: %s\nsession id: %d\n", path, hex.EncodeToString(pub), wire.SessionID(pub))
	if r.stdout != want {
		t.Errorf("keygen stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v; want mode 0600", err, st.Mode().Perm())
	}

	r = runTlsgate(t, "", "keygen", "--out", path)
	if r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Errorf("keygen over an existing key: exit %d, stderr %q; want 1 and a hint about --force", r.code, r.stderr)
	}
	if again, err := keyfile.Load(path); err != nil || !again.Equal(key) {
		t.Fatalf("the refused keygen changed the key (err %v)", err)
	}

	r = runTlsgate(t, "", "keygen", "--out", path, "--force")
	if r.code != 0 {
		t.Fatalf("keygen --force exited %d:\n%s", r.code, r.stderr)
	}
	if replaced, err := keyfile.Load(path); err != nil || replaced.Equal(key) {
		t.Errorf("keygen --force did not replace the key (err %v)", err)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := runTlsgate(t, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "tlsgate ") {
		t.Errorf("version: exit %d, stdout %q", r.code, r.stdout)
	}
}
