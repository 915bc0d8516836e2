// Command spillway-gpu-exporter exports per-process GPU utilization, labelled
// with the owning pod, for Prometheus.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spillway-dev/spillway/cmd/spillway-gpu-exporter/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "spillway-gpu-exporter:", err)
		os.Exit(1)
	}
}
