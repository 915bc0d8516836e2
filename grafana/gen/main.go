// Command gen renders spillway's Grafana dashboards (package grafana) into
// grafana/dashboards for file provisioning and into the Helm chart's
// dashboards/ for the dashboard sidecar. Run it from the repository root:
//
//	go run ./grafana/gen
//
// grafana's package test fails when the committed files differ from what
// this writes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spillway-dev/spillway/grafana"
)

func main() {
	root := flag.String("root", ".", "Repository root; dashboards are written under grafana/dashboards and deploy/helm/spillway/dashboards in it.")
	flag.Parse()
	if err := run(*root); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	files, err := grafana.All()
	if err != nil {
		return err
	}
	for _, dir := range grafana.OutputDirs {
		dir = filepath.Join(root, dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, f := range files {
			data, err := grafana.Render(f.Dashboard)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f.Name), data, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
