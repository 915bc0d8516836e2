// Package placement tests ResourcePolicy placement against the local control
// plane: the real API server (schema and CEL validation), scheduler,
// ReplicaSet controller (pod-deletion-cost), kwok nodes and Karpenter's
// elastic pool, with spillway-controller serving the placement webhook.
//
// Every test gets its own namespace, its own on-prem pool (kwok nodes) and
// its own elastic NodePool, and removes them when it ends, because the
// cluster is shared by the whole package.
package placement

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

const (
	repoRoot = "../.."
	binDir   = repoRoot + "/bin"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	// SPILLWAY_KEEP_CLUSTER_DIR keeps the cluster's logs for debugging.
	opts := localcluster.Options{KeepDir: os.Getenv("SPILLWAY_KEEP_CLUSTER_DIR") != ""}
	os.Exit(framework.Main(m, opts, func(c *localcluster.Cluster) { cluster = c }))
}

var (
	spillwayOnce sync.Once
	spillwayErr  error
)

// startSpillway installs the CRDs and runs spillway-controller (webhook
// registered by URL on localhost) once for the package.
func startSpillway(t *testing.T) {
	t.Helper()
	spillwayOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := framework.InstallCRDs(ctx, cluster, repoRoot); err != nil {
			spillwayErr = fmt.Errorf("installing CRDs: %w", err)
			return
		}
		if _, err := framework.StartController(ctx, cluster, binDir, nil); err != nil {
			spillwayErr = fmt.Errorf("starting spillway-controller (build it first: go build -o bin/spillway-controller ./cmd/spillway-controller): %w", err)
		}
	})
	if spillwayErr != nil {
		t.Fatal(spillwayErr)
	}
}
