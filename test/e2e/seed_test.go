// Package e2e plays the seed scenario against the whole system: the three
// spillway binaries, a real Prometheus, the real HPA, scheduler, kwok nodes
// and Karpenter's elastic pool.
package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/internal/demo"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/internal/scenario"
	"github.com/spillway-dev/spillway/test/framework"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, localcluster.Options{}, func(c *localcluster.Cluster) { cluster = c }))
}

// Grace is the ResourcePolicy's default re-placement grace; no predictor pod
// may stay Pending longer than it plus the time Karpenter needs for a node.
const pendingLimit = 30*time.Second + 45*time.Second

func TestSeedScenarioTidalDay(t *testing.T) {
	ctx := context.Background()
	env, err := demo.StartEnv(ctx, cluster, demo.Options{BinDir: "../../bin", RepoRoot: "../..", Log: os.Stderr, AsServiceAccounts: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../traces/tidal-day.csv")
	if err != nil {
		t.Fatal(err)
	}
	trace, err := scenario.ParseTrace(b)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := env.Play(ctx, demo.Run{Namespace: "seed", Trace: trace, DayDuration: 6 * time.Minute, WithPolicy: true, Table: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	if res.PeakReplicas != 3 || res.PeakElastic != 2 {
		t.Errorf("peak: %d replicas running, %d on elastic nodes; want 3 and 2", res.PeakReplicas, res.PeakElastic)
	}
	if res.MaxPendingAge > pendingLimit {
		t.Errorf("a predictor pod stayed Pending %s (limit %s)", res.MaxPendingAge, pendingLimit)
	}
	for _, r := range res.Timeline.Removals {
		if r.Reason == scenario.ReasonScaleIn && r.Pool != "elastic" {
			t.Errorf("scale-in removed %s from the %s pool; the elastic pool must drain first", r.Pod, r.Pool)
		}
	}
	framework.Eventually(t, 4*time.Minute, 2*time.Second, "the trough: 1 replica on-prem and no elastic nodes", func(ctx context.Context) (bool, string) {
		byNode, notRunning, err := framework.PodsByNode(ctx, cluster, "seed", "app="+demo.PredictorApp)
		if err != nil {
			return false, err.Error()
		}
		elastic, err := framework.NodesOfPool(ctx, cluster, demo.ElasticPool)
		if err != nil {
			return false, err.Error()
		}
		onPrem := len(byNode[demo.OnPremPool+"-0"])
		total := 0
		for _, ps := range byNode {
			total += len(ps)
		}
		return onPrem == 1 && total == 1 && len(notRunning) == 0 && len(elastic) == 0,
			"running on-prem=" + itoa(onPrem) + " total=" + itoa(total) + " not-running=" + itoa(len(notRunning)) + " elastic-nodes=" + itoa(len(elastic))
	})
	// After the scenario (and still with its objects): what the shipped
	// dashboards show of it.
	t.Run("DashboardQueries", func(t *testing.T) { checkDashboardQueries(t, env.Prometheus.URL, start) })
	f := res.Figures
	t.Logf("cloud GPU-minutes %.0f (oracle %.0f), on-prem util %.1f%%, minutes over target %.0f, scale events %d, time to elastic %s",
		f.CloudGPUMinutes, scenario.Oracle(trace, scenario.Seed).CloudGPUMinutes, f.OnPremUtilization, f.MinutesOverTarget, f.ScaleEvents, f.TimeToElastic)
}
