// Command spillway-metrics-adapter serves spillway's GPU metrics to the
// HPA through the custom and external metrics APIs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spillway-dev/spillway/cmd/spillway-metrics-adapter/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "spillway-metrics-adapter:", err)
		os.Exit(1)
	}
}
