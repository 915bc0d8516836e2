// Package app is spillway-gpu-exporter's command line: flags, validation,
// wiring and run. Subcommands:
//
//	spillway-gpu-exporter [serve] [flags]                   run the exporter (default)
//	spillway-gpu-exporter podmap --proc-root DIR [--pid N]  print PID -> pod for a /proc tree
package app

import (
	"context"
	"fmt"
	"io"
	"strings"
)

const binaryName = "spillway-gpu-exporter"

// Run dispatches to a subcommand and runs it until ctx ends.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "serve":
			return runServe(ctx, args[1:], stdout, stderr)
		case "podmap":
			return runPodmap(args[1:], stdout, stderr)
		case "help":
			return runServe(ctx, []string{"--help"}, stdout, stderr)
		default:
			return fmt.Errorf("unknown subcommand %q: want serve or podmap (see --help)", args[0])
		}
	}
	return runServe(ctx, args, stdout, stderr)
}
