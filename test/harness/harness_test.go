// Package harness proves the local control plane is the real chain: the
// scheduler binds GPU pods to kwok nodes, Karpenter adds an elastic node for
// a pod that does not fit on-prem and removes it once empty.
package harness

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, localcluster.Options{}, func(c *localcluster.Cluster) { cluster = c }))
}

func TestKubectlVersionReportsPinnedRelease(t *testing.T) {
	out, err := exec.Command(cluster.Binaries().Kubectl, "--kubeconfig", cluster.KubeconfigPath(), "version", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl version: %v\n%s", err, out)
	}
	var v struct {
		ServerVersion struct {
			GitVersion string `json:"gitVersion"`
		} `json:"serverVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("parsing kubectl version output: %v\n%s", err, out)
	}
	if v.ServerVersion.GitVersion != localcluster.KubernetesVersion {
		t.Fatalf("server version = %q, want %q", v.ServerVersion.GitVersion, localcluster.KubernetesVersion)
	}
}

func TestGPUPodSpillsToKarpenterNodeAndNodeIsRemoved(t *testing.T) {
	ctx := context.Background()
	ns := framework.Namespace(t, cluster)
	onprem, err := cluster.AddStaticGPUNodes(ctx, "harness-onprem", 1, localcluster.DefaultGPUNode)
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.AddElasticPool(ctx, localcluster.ElasticPool{Name: "harness-elastic"}); err != nil {
		t.Fatal(err)
	}
	dep := framework.GPUDeployment(ns, "predictor", "harness", 2, "4", "12Gi")
	if _, err := cluster.Client().AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	framework.Eventually(t, 3*time.Minute, time.Second, "one pod on-prem and one on a Karpenter node", func(ctx context.Context) (bool, string) {
		byNode, pending, err := framework.PodsByNode(ctx, cluster, ns, "app=harness")
		if err != nil {
			return false, err.Error()
		}
		elastic, err := framework.NodesOfPool(ctx, cluster, "harness-elastic")
		if err != nil {
			return false, err.Error()
		}
		onElastic := 0
		for _, n := range elastic {
			if n.Labels["karpenter.sh/nodepool"] != "harness-elastic" {
				return false, "elastic node " + n.Name + " lacks the karpenter.sh/nodepool label"
			}
			onElastic += len(byNode[n.Name])
		}
		got := len(byNode[onprem[0]])
		return got == 1 && onElastic == 1, summarize(got, onElastic, len(pending), len(elastic))
	})

	if _, err := cluster.Client().AppsV1().Deployments(ns).Patch(ctx, "predictor", "application/merge-patch+json",
		[]byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 3*time.Minute, time.Second, "Karpenter removes the empty elastic node", func(ctx context.Context) (bool, string) {
		elastic, err := framework.NodesOfPool(ctx, cluster, "harness-elastic")
		if err != nil {
			return false, err.Error()
		}
		byNode, pending, err := framework.PodsByNode(ctx, cluster, ns, "app=harness")
		if err != nil {
			return false, err.Error()
		}
		return len(elastic) == 0 && len(byNode[onprem[0]]) == 1, summarize(len(byNode[onprem[0]]), -1, len(pending), len(elastic))
	})
}

func summarize(onprem, onElastic, pending, elasticNodes int) string {
	return "running on-prem=" + itoa(onprem) + " on-elastic=" + itoa(onElastic) + " not-running=" + itoa(pending) + " elastic-nodes=" + itoa(elasticNodes)
}

func itoa(i int) string { return strconv.Itoa(i) }
