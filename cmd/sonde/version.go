package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// commit is the source's `git describe --always --dirty`, set by the
// Makefile's build (-ldflags -X): go build's own stamp (vcs.revision) is
// off wherever GOFLAGS has -buildvcs=false, and fails the build where git
// refuses the checkout's owner.
var commit = ""

// version writes what `sonde version` prints: the module version, the
// commit (and its time, when go build stamped it), and the Go version.
func version(w io.Writer) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(w, "sonde (no build information)")
		return
	}
	rev, at, dirty := "unknown", "", ""
	if commit != "" {
		rev = commit
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = " " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	fmt.Fprintf(w, "sonde %s commit %s%s%s %s\n", bi.Main.Version, rev, dirty, at, bi.GoVersion)
}

// versionString is the commit the Makefile stamped, "dev" without it:
// what Sonde's own clients send as their User-Agent.
func versionString() string {
	if commit != "" {
		return commit
	}
	return "dev"
}
