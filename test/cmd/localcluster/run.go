package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spillway-dev/spillway/internal/localcluster"
)

const usage = `usage: localcluster <command>

commands:
  build   build the pinned control-plane binaries into the cache (no cluster)
  up      start a cluster and print its KUBECONFIG; it keeps running in the background
  down    stop the cluster started by "up"
`

func run(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New(usage)
	}
	switch args[0] {
	case "build":
		bins, err := localcluster.EnsureBinaries(ctx, os.Stderr)
		if err != nil {
			return err
		}
		fmt.Printf("%+v\n", *bins)
		return nil
	case "-h", "--help", "help":
		fmt.Print(usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}
