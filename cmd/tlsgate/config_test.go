package main

// The configuration file and the settings' precedence: flag > env > file >
// default; bad values and unknown keys in the file fail at start, naming the
// key; every serve flag has an env var, shows in --help, and is documented
// in docs/operations.md.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tlsgate.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runInProcess runs the command line in-process and returns its exit
// status and stderr.
func runInProcess(args ...string) (int, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
	return code, stderr.String()
}

// TestConfigPrecedence: the value serve validates comes from the flag,
// else the env var, else the file, else the default. Each source holds a
// different invalid --max-payload, so the error names the one that won.
// Not parallel: it sets env vars.
func TestConfigPrecedence(t *testing.T) {
	file := writeConfig(t, "max-payload: 70001\nlog-level: debug\n")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"file over default", nil, []string{"--config", file}, "got 70001"},
		{"file named by env", map[string]string{"TLSGATE_CONFIG": file}, nil, "got 70001"},
		{"env over file", map[string]string{"TLSGATE_MAX_PAYLOAD": "70002"}, []string{"--config", file}, "got 70002"},
		{"flag over env and file", map[string]string{"TLSGATE_MAX_PAYLOAD": "70002"}, []string{"--config", file, "--max-payload", "70003"}, "got 70003"},
		{"flag before --config", nil, []string{"--max-payload", "70003", "--config", file}, "got 70003"},
		{"flag over file", nil, []string{"--config", file, "--max-payload=70003"}, "got 70003"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, stderr := runInProcess(append([]string{"serve", "--dev-dir", t.TempDir()}, tc.args...)...)
			if code != 80 || !strings.Contains(stderr, "--max-payload must be between 1 and 65531, "+tc.want) {
				t.Errorf("exit %d, stderr %q; want 80 and --max-payload ... %s", code, stderr, tc.want)
			}
		})
	}
	// The default, when no source sets it, is valid: the error is then
	// another setting's.
	t.Run("default", func(t *testing.T) {
		code, stderr := runInProcess("serve", "--dev-dir", t.TempDir(), "--config", writeConfig(t, "queue-bytes: 10\n"))
		if code != 80 || !strings.Contains(stderr, "--queue-bytes must hold at least one full frame (65535 bytes with a largest payload of 65531), got 10") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

// TestConfigFileErrors: a bad file fails at start with exit 80 and a
// message naming the file, the key and what it accepts.
func TestConfigFileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		content string
		want    []string
	}{
		{"handler: bogus\n", []string{"line 1", `handler must be one of "echo","discard", got "bogus"`}},
		{"log-format: xml\n", []string{`log-format must be one of "text","json", got "xml"`}},
		{"max-conns: 10\nmax-con: 5\n", []string{"line 2", `unknown key "max-con"`, "max-conns"}},
		{"config: other.yaml\n", []string{`unknown key "config"`}},
		{"drain-timeout: soon\n", []string{"drain-timeout", `"soon"`}},
		{"drain-timeout: 10\n", []string{"drain-timeout", "missing unit"}},
		{"max-conns: many\n", []string{"max-conns", "int"}},
		{"max-streams: lots\n", []string{"max-streams", "int"}},
		{"allow-tls12: perhaps\n", []string{"allow-tls12", "bool"}},
		{"max-conns:\n", []string{"max-conns: no value"}},
		{"max-conns: [1, 2]\n", []string{"max-conns: want a single value"}},
		{"max-conns: 1\nmax-conns: 2\n", []string{`key "max-conns" is set twice`}},
		{"- max-conns\n", []string{"want a mapping of setting names"}},
		{"max-conns: [\n", []string{"yaml"}},
	} {
		t.Run(strings.TrimSpace(tc.content), func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, tc.content)
			code, stderr := runInProcess("serve", "--dev-dir", t.TempDir(), "--config", path)
			if code != 80 {
				t.Errorf("exit %d, want 80 (usage error)", code)
			}
			for _, want := range append([]string{path}, tc.want...) {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		missing := filepath.Join(t.TempDir(), "none.yaml")
		code, stderr := runInProcess("serve", "--dev-dir", t.TempDir(), "--config", missing)
		if code != 80 || !strings.Contains(stderr, "--config") || !strings.Contains(stderr, missing) {
			t.Errorf("exit %d, stderr %q; want 80 naming --config and the file", code, stderr)
		}
	})
}

// TestConfigFileServe: the real binary, every setting from the file: the
// control plane turned off by an empty value, JSON logs, the admin
// listener, and an allow list relative to the file's directory.
func TestConfigFileServe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keys.txt"), []byte("# no key yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "tlsgate.yaml")
	content := `# tlsgate serve settings
addr: 127.0.0.1:0
control-addr: ""
admin-addr: "127.0.0.1:0"
log-format: json
allow-list: keys.txt
pprof: true
dev-dir: ` + filepath.Join(dir, "dev") + "\n"
	if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startEnv(t, []string{"TLSGATE_CONFIG=" + cfg}, nil, "serve")
	p.waitLine(p.stdout, "listening on ")
	admin := p.waitLine(p.stdout, "admin listening on ")
	if _, ok := p.stdout.find("control plane listening on "); ok {
		t.Error("the control plane listens despite control-addr: \"\" in the file")
	}
	if code, _ := httpGet(t, "http://"+admin+"/debug/pprof/"); code != 200 {
		t.Errorf("GET /debug/pprof/ with pprof: true = %d, want 200", code)
	}
	if _, ok := p.stdout.find("dev mode: self-signed certificate kept in " + filepath.Join(dir, "dev")); !ok {
		t.Errorf("dev-dir from the file not used:\n%s", p.stdout)
	}
	(&serveProc{proc: p}).stop()
	<-p.stderr.eof
	loaded := false
	for _, line := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log-format: json from the file not used: %q", line)
		}
		if rec["msg"] == "allow list loaded" && rec["file"] == filepath.Join(dir, "keys.txt") {
			loaded = true
		}
	}
	if !loaded {
		t.Errorf("the allow list was not loaded from %s:\n%s", filepath.Join(dir, "keys.txt"), p.stderr)
	}
}

// serveSettings are the long names and env vars of serve's flags and of
// the global flags, read from the structs kong reads.
func serveSettings(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, typ := range []reflect.Type{reflect.TypeFor[serveCmd](), reflect.TypeFor[globals]()} {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := f.Tag.Get("name")
			if name == "" {
				name = kebab(f.Name)
			}
			env := f.Tag.Get("env")
			if !strings.HasPrefix(env, "TLSGATE_") {
				t.Errorf("--%s has no TLSGATE_ env var (env tag %q)", name, env)
			}
			out[name] = env
		}
	}
	return out
}

// TestServeSettingsDocumented: serve --help shows every setting with its
// env var, and docs/operations.md's table has every one.
func TestServeSettingsDocumented(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--help"}, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("serve --help exited %d: %s", code, stderr.String())
	}
	help := strings.Join(strings.Fields(stdout.String()), " ")
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name, env := range serveSettings(t) {
		if !strings.Contains(help, "--"+name) || !strings.Contains(help, "($"+env+")") {
			t.Errorf("serve --help lacks --%s or ($%s)", name, env)
		}
		if !strings.Contains(string(doc), "| `--"+name) || !strings.Contains(string(doc), "`"+env+"`") {
			t.Errorf("docs/operations.md lacks a row for --%s (%s)", name, env)
		}
	}
	for _, want := range []string{"--admin-addr=HOST:PORT", "(default: 127.0.0.1:7225) ($TLSGATE_ADMIN_ADDR)", "--pprof", "($TLSGATE_PPROF)", "--config=FILE", "($TLSGATE_CONFIG)"} {
		if !strings.Contains(help, want) {
			t.Errorf("serve --help lacks %q", want)
		}
	}
}
