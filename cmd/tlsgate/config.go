package main

// The configuration file of serve (--config FILE, TLSGATE_CONFIG): YAML,
// keyed by the long flag names of serve and of the global flags, e.g.
//
//	max-conns: 500
//	drain-timeout: 30s
//	log-format: json
//
// It is a kong resolver: kong parses and checks a value from the file just
// like one from the command line. Precedence is flag > env > file >
// default: kong itself asks resolvers for every flag not on the command
// line, env vars included, so this resolver stands back when one of the
// flag's env vars is set.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"
)

// configFile is the type of --config. Its hook loads the file before
// kong resolves the flags not given on the command line.
type configFile string

// BeforeResolve reads the file named by --config (or TLSGATE_CONFIG) and
// adds it as a resolver of the selected command's flags.
func (configFile) BeforeResolve(ctx *kong.Context, trace *kong.Path) error {
	flags := selectedFlags(ctx)
	if !slices.Contains(flags, trace.Flag) {
		// kong runs the hooks of flags set by env on every command; the
		// file belongs to the command that declares --config.
		return nil
	}
	v, _ := ctx.FlagValue(trace.Flag).(configFile)
	path := string(v)
	if path == "" {
		return nil
	}
	r, err := loadConfig(path, flags)
	if err != nil {
		// Reported by Validate, so that it is a usage error like a bad flag.
		r = &configResolver{path: path, err: err}
	}
	ctx.AddResolver(r)
	return nil
}

// selectedFlags are the flags of the selected command and its parents.
func selectedFlags(ctx *kong.Context) []*kong.Flag {
	var out []*kong.Flag
	for _, p := range ctx.Path {
		if n := p.Node(); n != nil && (p.App != nil || p.Command != nil) {
			out = append(out, n.Flags...)
		}
	}
	return out
}

// configKeys are the keys a file may hold: every long flag name but
// help and config itself.
func configKeys(flags []*kong.Flag) map[string]*kong.Flag {
	keys := make(map[string]*kong.Flag, len(flags))
	for _, f := range flags {
		if f.Name == "help" || f.Name == "config" || f.Hidden {
			continue
		}
		keys[f.Name] = f
	}
	return keys
}

// configResolver resolves flags from a parsed file. Values are checked
// when the file is loaded; Validate reports what is wrong, so that a bad
// file is a usage error (exit 80) like a bad flag.
type configResolver struct {
	path   string
	values map[string]string // by flag name
	err    error             // the first problem of the file, reported by Validate
}

// loadConfig parses the YAML file at path: a mapping of flag names to
// scalar values. Relative paths in values of path flags are relative to
// the file's directory.
func loadConfig(path string, flags []*kong.Flag) (*configResolver, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	r := &configResolver{path: path, values: map[string]string{}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // an empty file sets nothing
			return r, nil
		}
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return r, nil // only comments
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s: want a mapping of setting names (the long flag names, e.g. max-conns) to values", path)
	}
	keys := configKeys(flags)
	dir := filepath.Dir(path)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		if err := r.add(keys, dir, key, k, v); err != nil && r.err == nil {
			r.err = fmt.Errorf("config file %s, line %d: %w", path, k.Line, err)
		}
	}
	return r, nil
}

func (r *configResolver) add(keys map[string]*kong.Flag, dir, key string, k, v *yaml.Node) error {
	f, ok := keys[key]
	if !ok {
		names := make([]string, 0, len(keys))
		for n := range keys {
			names = append(names, n)
		}
		slices.Sort(names)
		return fmt.Errorf("unknown key %q; the keys are the long flag names: %s", key, strings.Join(names, ", "))
	}
	if k.Kind != yaml.ScalarNode {
		return fmt.Errorf("key %q: not a plain name", key)
	}
	if _, dup := r.values[key]; dup {
		return fmt.Errorf("key %q is set twice", key)
	}
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	if v.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: want a single value, not a list or a mapping", key)
	}
	if v.Tag == "!!null" {
		return fmt.Errorf("%s: no value (to keep the default, leave the key out; for an empty value write \"\")", key)
	}
	val := v.Value
	if f.Tag.Type == "path" && val != "" && !filepath.IsAbs(val) && !strings.HasPrefix(val, "~") {
		val = filepath.Join(dir, val)
	}
	// Check the value as kong will parse it, into a scratch target.
	scratch := reflect.New(f.Target.Type()).Elem()
	if err := f.Mapper.Decode(&kong.DecodeContext{Value: f.Value, Scan: kong.Scan().PushTyped(val, kong.FlagValueToken)}, scratch); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if f.Enum != "" && !f.EnumMap()[val] {
		return fmt.Errorf("%s must be one of %s, got %q", key, quoteAll(f.EnumSlice()), val)
	}
	r.values[key] = val
	return nil
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ",")
}

// Validate reports the first problem of the file.
func (r *configResolver) Validate(*kong.Application) error { return r.err }

// Resolve gives the file's value of a flag, unless one of the flag's env
// vars is set: env wins over the file.
func (r *configResolver) Resolve(_ *kong.Context, _ *kong.Path, f *kong.Flag) (any, error) {
	if r.err != nil {
		return nil, nil // Validate reports it
	}
	v, ok := r.values[f.Name]
	if !ok {
		return nil, nil
	}
	for _, env := range f.Envs {
		if _, set := os.LookupEnv(env); set {
			return nil, nil
		}
	}
	return v, nil
}
