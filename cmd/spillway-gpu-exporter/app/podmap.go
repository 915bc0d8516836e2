package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/spillway-dev/spillway/cmd/internal/cli"
	"github.com/spillway-dev/spillway/pkg/podmap"
)

const podmapUsage = `spillway-gpu-exporter podmap prints which pod and container own host processes,
from the cgroup files of a /proc tree, one JSON object per line:

  {"pid":1234,"podUID":"...","containerID":"..."}

podUID and containerID are empty for processes outside any pod. It reads only the
given /proc tree and needs no cluster: run it on a node (or in the exporter's pod)
to see what the exporter will map a PID to. Unreadable processes (they exited
during the scan) are reported on stderr.

Usage:
  spillway-gpu-exporter podmap --proc-root DIR [--pid N]
`

// podmapOptions are the podmap subcommand's flags.
type podmapOptions struct {
	ProcRoot    string
	PID         int
	ShowVersion bool
}

func (o *podmapOptions) Validate() error {
	var errs []error
	if o.ProcRoot == "" {
		errs = append(errs, errors.New("--proc-root is empty"))
	}
	if o.PID < 0 {
		errs = append(errs, fmt.Errorf("--pid %d: must be a process ID", o.PID))
	}
	return errors.Join(errs...)
}

type podmapLine struct {
	PID int `json:"pid"`
	podmap.Identity
}

func runPodmap(args []string, stdout, stderr io.Writer) error {
	o := &podmapOptions{ProcRoot: "/proc"}
	fs := pflag.NewFlagSet(binaryName+" podmap", pflag.ContinueOnError)
	fs.StringVar(&o.ProcRoot, "proc-root", o.ProcRoot, "The /proc tree to read (the host's /proc, or a copy).")
	fs.IntVar(&o.PID, "pid", 0, "Map only this PID; an error if it cannot be read. 0 maps every process.")
	fs.BoolVar(&o.ShowVersion, "version", false, "Print the version and exit.")
	done, err := cli.Command{
		Binary:      binaryName,
		Flags:       fs,
		Help:        func() string { return fmt.Sprintf("%s\nFlags:\n%s", podmapUsage, fs.FlagUsages()) },
		HelpHint:    "podmap --help",
		ShowVersion: &o.ShowVersion,
		Validate:    o.Validate,
	}.Parse(args, stdout)
	if err != nil {
		return fmt.Errorf("podmap: %w", err)
	}
	if done {
		return nil
	}

	m := podmap.NewMapper(os.DirFS(o.ProcRoot))
	enc := json.NewEncoder(stdout)
	if o.PID != 0 {
		id, err := m.Lookup(o.PID)
		if err != nil {
			return fmt.Errorf("podmap: %w", err)
		}
		return enc.Encode(podmapLine{o.PID, id})
	}
	pids, err := m.PIDs()
	if err != nil {
		return fmt.Errorf("podmap: %s: %w", o.ProcRoot, err)
	}
	for _, pid := range pids {
		id, err := m.Lookup(pid)
		if err != nil {
			fmt.Fprintf(stderr, "podmap: skipping %v\n", err)
			continue
		}
		if err := enc.Encode(podmapLine{pid, id}); err != nil {
			return err
		}
	}
	return nil
}
