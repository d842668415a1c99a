package main

import (
	"fmt"
	goruntime "runtime"
	"runtime/debug"
)

// version is set at link time: -ldflags '-X main.version=v1.2.3'. When
// empty, the module version from the build info is used.
var version string

type versionCmd struct{}

func (versionCmd) Run(rt *runtime) error {
	_, err := fmt.Fprintf(rt.stdout, "tlsgate %s (%s %s/%s)\n", versionString(), goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
	return err
}

// versionString is the version of this build: the link-time version, else
// the module version and VCS revision recorded by the go command.
func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" && v == "(devel)" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v = rev + dirty
	}
	return v
}
