// Command spillway-controller runs spillway's Kubernetes controllers and the
// pod placement webhook of ResourcePolicy.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spillway-dev/spillway/cmd/spillway-controller/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "spillway-controller:", err)
		os.Exit(1)
	}
}
