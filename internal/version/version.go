// Package version says which chatty a binary is: the version stamped at
// build time (git describe, by the Makefile; the package's version, by
// make package), else what the Go toolchain recorded (a module version,
// or the git revision of the checkout it was built in), else "dev".
package version

import "runtime/debug"

// stamped is set with -ldflags "-X github.com/chatty-dev/chatty/internal/version.stamped=...".
var stamped string

// String returns the binary's version.
func String() string {
	if stamped != "" {
		return stamped
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return fromBuildInfo(bi)
}

// fromBuildInfo is the version the toolchain recorded.
func fromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return "dev-" + rev
}
