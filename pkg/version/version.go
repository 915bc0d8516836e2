// Package version carries the build's version, set by the Makefile through
// -ldflags "-X github.com/spillway-dev/spillway/pkg/version.Version=...".
package version

import (
	"fmt"
	"runtime"
)

// Version and Commit are overwritten at link time; the defaults mark a
// build that did not go through the Makefile.
var (
	Version = "v0.0.0-dev"
	Commit  = "unknown"
)

// String is what every binary prints for --version.
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", binary, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
