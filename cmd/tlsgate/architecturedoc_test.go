package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const modulePath = "github.com/tlsgate/tlsgate"

// repoRoot is where go.mod is, from this package's directory.
var repoRoot = filepath.Join("..", "..")

var (
	// docPath is a backquoted path of the repository.
	docPath = regexp.MustCompile("`((?:wire|client|server|internal|cmd|proto|gen|sdk|docs|\\.ci)(?:/[\\w.-]+)*/?)`")
	// docFileName is "`file.go` (`name`)": name is declared in file.
	docFileName = regexp.MustCompile("`([\\w/.-]+\\.go)`\\s+\\(`(\\w+)`\\)")
	// docTableRow is a row of the package table.
	docTableRow = regexp.MustCompile("(?m)^\\| `([\\w/]+)/` \\|.*\\| ([^|]+) \\|$")
)

// TestArchitectureDocIsTrue keeps docs/architecture.md a true map: every
// path it names exists, every function it places in a file is declared
// there, and its package table lists every Go package of the module with
// exactly the packages of this module that it imports.
func TestArchitectureDocIsTrue(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)

	for _, m := range docPath.FindAllStringSubmatch(doc, -1) {
		if _, err := os.Stat(filepath.Join(repoRoot, m[1])); err != nil {
			t.Errorf("docs/architecture.md names %s, which does not exist", m[1])
		}
	}
	for _, m := range docFileName.FindAllStringSubmatch(doc, -1) {
		src, err := os.ReadFile(filepath.Join(repoRoot, m[1]))
		if err != nil {
			t.Errorf("docs/architecture.md names %s: %v", m[1], err)
			continue
		}
		decl := regexp.MustCompile(`(?m)^func (\([^)]*\) )?` + m[2] + `[\[(]`)
		if !decl.Match(src) {
			t.Errorf("docs/architecture.md places %s in %s, which does not declare it", m[2], m[1])
		}
	}

	documented := map[string][]string{}
	for _, m := range docTableRow.FindAllStringSubmatch(doc, -1) {
		var imports []string
		if cell := strings.TrimSpace(m[2]); cell != "none" {
			for p := range strings.SplitSeq(cell, ",") {
				imports = append(imports, strings.Trim(strings.TrimSpace(p), "`/"))
			}
		}
		documented[m[1]] = imports
	}
	actual := moduleImports(t)
	for pkg, imports := range actual {
		want, ok := documented[pkg]
		if !ok {
			t.Errorf("docs/architecture.md: package %s/ is missing from the package table", pkg)
			continue
		}
		if !slices.Equal(want, imports) {
			t.Errorf("docs/architecture.md: %s/ imports %q of this module, the table says %q", pkg, imports, want)
		}
	}
	for pkg := range documented {
		if _, ok := actual[pkg]; !ok {
			t.Errorf("docs/architecture.md: the package table lists %s/, which is not a Go package", pkg)
		}
	}
}

// moduleImports returns, for every package directory of the module (by
// path from the root), the sorted packages of the module that its non-test
// files import.
func moduleImports(t *testing.T) map[string][]string {
	t.Helper()
	pkgs := map[string][]string{}
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != repoRoot && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "bin" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repoRoot, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		imports := pkgs[pkg]
		for _, spec := range f.Imports {
			p, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			if dep, ok := strings.CutPrefix(p, modulePath+"/"); ok && !slices.Contains(imports, dep) {
				imports = append(imports, dep)
			}
		}
		slices.Sort(imports)
		pkgs[pkg] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}
