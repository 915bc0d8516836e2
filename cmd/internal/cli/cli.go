// Package cli is the command-line front door the spillway binaries share, so
// that --help, --version, stray arguments and invalid flags behave the same
// in each of them.
package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/spillway-dev/spillway/pkg/version"
)

// Command is one command line to parse.
type Command struct {
	// Binary names the program in --version.
	Binary string
	// Flags holds every flag the command accepts, --version included.
	Flags *pflag.FlagSet
	// Help returns the whole --help text.
	Help func() string
	// HelpHint is what errors tell the user to run, such as "--help" or
	// "podmap --help".
	HelpHint string
	// ShowVersion is the variable --version sets.
	ShowVersion *bool
	// Validate checks the parsed values; nil when there is nothing to check.
	Validate func() error
}

// Parse parses args into c.Flags. done reports that --help or --version was
// answered on stdout and the caller should return nil. Stray positional
// arguments and validation failures are reported together, so one run shows
// every mistake.
func (c Command) Parse(args []string, stdout io.Writer) (done bool, err error) {
	c.Flags.SetOutput(io.Discard)
	hint := c.HelpHint
	if hint == "" {
		hint = "--help"
	}
	if err := c.Flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			_, werr := fmt.Fprint(stdout, c.Help())
			return true, werr
		}
		return false, fmt.Errorf("%w (see %s)", err, hint)
	}
	if c.ShowVersion != nil && *c.ShowVersion {
		_, werr := fmt.Fprintln(stdout, version.String(c.Binary))
		return true, werr
	}
	var argsErr, validErr error
	if c.Flags.NArg() > 0 {
		argsErr = fmt.Errorf("unexpected arguments %q (see %s)", c.Flags.Args(), hint)
	}
	if c.Validate != nil {
		validErr = c.Validate()
	}
	return false, errors.Join(argsErr, validErr)
}
