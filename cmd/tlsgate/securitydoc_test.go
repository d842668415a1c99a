package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/server"
)

// securityDoc returns docs/security.md.
func securityDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// codeBlockAfter returns the first fenced code block after marker.
func codeBlockAfter(t *testing.T, doc, marker string) string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, marker)
	if !ok {
		t.Fatalf("docs/security.md lacks %q", marker)
	}
	_, rest, ok = strings.Cut(rest, "```\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatalf("docs/security.md: no code block after %q", marker)
	}
	return block
}

// TestSecurityDocMatchesTheBinary keeps docs/security.md honest: every flag
// of its tables has the environment variable and the default the doc
// says (checked against `serve --help`), the refusal of an unauthenticated
// control plane is the exact message serve prints, and the allow-list
// example loads.
func TestSecurityDocMatchesTheBinary(t *testing.T) {
	t.Parallel()
	doc := securityDoc(t)

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--help"}, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("serve --help exited %d: %s", code, stderr.String())
	}
	help := strings.Join(strings.Fields(stdout.String()), " ")
	// flagHelp is the help text of one flag, through its "($ENV)".
	flagHelp := func(flag string) (string, bool) {
		i := strings.Index(help, " "+flag+"=")
		if i < 0 {
			i = strings.Index(help, " "+flag+" ")
		}
		if i < 0 {
			return "", false
		}
		rest := help[i+1:]
		if j := strings.Index(rest, "($TLSGATE_"); j >= 0 {
			if k := strings.Index(rest[j:], ")"); k >= 0 {
				rest = rest[:j+k+1]
			}
		}
		return rest, true
	}
	code := regexp.MustCompile("`([^`]*)`")
	spans := func(cell, prefix string) []string {
		var out []string
		for _, m := range code.FindAllStringSubmatch(cell, -1) {
			if strings.HasPrefix(m[1], prefix) {
				out = append(out, m[1])
			}
		}
		return out
	}
	rows := 0
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		// The limits table: limit | default | flag | env | defends.
		// The flags table: flag | env | default | notes.
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		fi, ei := -1, -1
		for i, c := range cells {
			if fi < 0 && len(spans(c, "--")) > 0 {
				fi = i
			}
			if ei < 0 && len(spans(c, "TLSGATE_")) > 0 {
				ei = i
			}
		}
		if fi < 0 || ei != fi+1 {
			continue
		}
		flags, envs := spans(cells[fi], "--"), spans(cells[ei], "TLSGATE_")
		defCell := ei + 1
		if fi > 0 {
			defCell = fi - 1
		}
		def := ""
		if m := code.FindStringSubmatch(cells[defCell]); m != nil {
			def = m[1]
		}
		for i, flag := range flags {
			h, ok := flagHelp(flag)
			if !ok {
				t.Errorf("docs/security.md names %s, which serve --help lacks", flag)
				continue
			}
			rows++
			if i >= len(envs) || !strings.Contains(h, "($"+envs[i]+")") {
				t.Errorf("docs/security.md: %s has env var %v; serve --help says: %s", flag, envs, h)
			}
			if def != "" && !strings.Contains(h, "(default: "+def+")") {
				t.Errorf("docs/security.md: %s defaults to %s; serve --help says: %s", flag, def, h)
			}
		}
	}
	if rows < 20 {
		t.Errorf("checked only %d flags of docs/security.md's tables", rows)
	}

	// The exact refusal message.
	want := strings.TrimSpace(codeBlockAfter(t, doc, "**Safe by default.**"))
	r := runTlsgate(t, "", "serve", "--addr", "127.0.0.1:0", "--control-addr", "0.0.0.0:7224", "--dev-dir", t.TempDir())
	if r.code != 80 || !strings.Contains(r.stderr, want+"\n") {
		t.Errorf("serve with an unauthenticated public control plane: exit %d, stderr:\n%s\nwant exit 80 and, as docs/security.md says:\n%s", r.code, r.stderr, want)
	}

	// The allow-list example.
	path := filepath.Join(t.TempDir(), "allow")
	if err := os.WriteFile(path, []byte(codeBlockAfter(t, doc, "blank lines and anything after `#` are\nignored:")), 0o600); err != nil {
		t.Fatal(err)
	}
	if list, err := server.LoadAllowList(path); err != nil || len(list) != 2 {
		t.Errorf("the allow-list example of docs/security.md: %d keys, %v; want 2", len(list), err)
	}
}
