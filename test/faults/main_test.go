// Package faults injects failures into spillway's inputs and parts on the
// real local control plane (kube-apiserver, kube-controller-manager's HPA,
// scheduler, kwok, Karpenter's kwok provider and a real Prometheus) while the
// seed workload runs at a steady peak: 3 replicas, 1 on the on-prem node and
// 2 on elastic nodes Karpenter made. spillway runs as the chart runs it: two
// controllers with leader election, each serving the placement webhook, and
// two metrics adapters, each behind a TCP proxy standing in for its Service,
// all under the chart's RBAC and admission policies.
//
// Each test breaks one thing, asserts by polling what must hold while it is
// broken (replicas never drop, readiness, placement, deletion costs), then
// mends it and measures how long the system takes to act on fresh data
// again. Every measured time is logged as one line
//
//	RECOVERY <case> <seconds>
//
// for docs/reliability.md. The tests share one environment and run in file
// order; each starts by waiting for the steady peak.
package faults

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

const (
	repoRoot = "../.."
	binDir   = repoRoot + "/bin"
)

// The contract under test, written out rather than imported from the code
// under test so that a rename there fails here.
const (
	labelPolicy    = "spillway.dev/policy"
	labelUnit      = "spillway.dev/unit"
	annotationCost = "controller.kubernetes.io/pod-deletion-cost"
	// costOnPrem and costElastic are the deletion costs of the seed's two
	// units (on-prem first).
	costOnPrem  = "1000000"
	costElastic = "0"
	// leaseName is the controllers' leader-election Lease in
	// framework.SystemNamespace (the chart's name for it).
	leaseName = "spillway-controller"
	// grace is the default re-placement grace of whenTryNextUnits.
	grace = 30 * time.Second
	// karpenterDisruptedTaint is the taint Karpenter puts on a node it is
	// about to drain and remove.
	karpenterDisruptedTaint = "karpenter.sh/disrupted"
)

// The environment's timing, as StartHA and the cluster configure it.
const (
	// interval is the exporter's collection, Prometheus's scrape and the
	// adapter's refresh interval (demo's CollectInterval default).
	interval = 2 * time.Second
	// hpaSync is kube-controller-manager's HPA sync period
	// (localcluster's default).
	hpaSync = 5 * time.Second
	// maxStaleness is the adapter's --max-staleness (framework.StartAdapter).
	maxStaleness = 30 * time.Second
	// promTimeout is the adapter's --prometheus-timeout here.
	promTimeout = 3 * time.Second
)

// The workload: the seed's predictor, ResourcePolicy and InferenceScaler in
// namespace ns, with maxReplicas raised to 4 so that a surge has room to
// scale out from the peak.
const (
	ns       = "faults"
	hpaName  = "qwen-chat"
	peakRPS  = 15.0 // 3 replicas at 50 %, the target: steady
	surgeRPS = 22.0 // 3 replicas at 73 %: the HPA wants 4
	peak     = 3
	surge    = 4
	// probeNS holds bare pods a policy selects, created to see whether
	// the webhook places them (they take a little CPU on the on-prem
	// node, no GPU).
	probeNS = "faults-probe"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	// SPILLWAY_KEEP_CLUSTER_DIR keeps the cluster's logs for debugging.
	opts := localcluster.Options{KeepDir: os.Getenv("SPILLWAY_KEEP_CLUSTER_DIR") != ""}
	code := framework.Main(m, opts, func(c *localcluster.Cluster) { cluster = c })
	if env != nil {
		env.Close()
	}
	os.Exit(code)
}

var (
	envOnce sync.Once
	envErr  error
	env     *demo.HA
)

// faultEnv starts, once for the package, the replicated environment and the
// workload.
func faultEnv(t *testing.T) *demo.HA {
	t.Helper()
	envOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		env, envErr = demo.StartHA(ctx, cluster, demo.HAOptions{
			Options:     demo.Options{BinDir: binDir, RepoRoot: repoRoot, Log: os.Stderr, AsServiceAccounts: true, CollectInterval: interval},
			AdapterArgs: []string{"--prometheus-timeout=" + promTimeout.String()},
		})
		if envErr != nil {
			envErr = fmt.Errorf("starting spillway (build it first: make build): %w", envErr)
			return
		}
		envErr = cluster.Apply(ctx, []byte(workload()))
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return env
}

// workload is the seed (scale-down window 1 s, so a reset is quick) with
// maxReplicas 4, and the probe namespace with its policy.
func workload() string {
	seed := demo.SeedObjects(ns, true, time.Second)
	return seed + fmt.Sprintf(`---
apiVersion: spillway.dev/v1alpha1
kind: InferenceScaler
metadata:
  name: qwen-chat
  namespace: %[1]s
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: %[2]s}
  minReplicas: 1
  maxReplicas: %[3]d
  metric: {name: DCGM_CUSTOM_PROCESS_SM_UTIL, type: Pods, target: 50}
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 0
      policies: [{type: Pods, value: 2, periodSeconds: 5}]
    scaleDown:
      stabilizationWindowSeconds: 1
      policies: [{type: Pods, value: 1, periodSeconds: 5}]
---
apiVersion: v1
kind: Namespace
metadata:
  name: %[4]s
---
apiVersion: spillway.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: probe
  namespace: %[4]s
spec:
  selector: {app: probe}
  units:
  - {resource: onprem, name: onprem, nodeSelector: {%[5]s: %[6]s}}
  - {resource: elastic, name: elastic, nodeSelector: {%[5]s: %[7]s}}
`, ns, demo.Predictor, surge, probeNS, localcluster.PoolLabel, demo.OnPremPool, demo.ElasticPool)
}
