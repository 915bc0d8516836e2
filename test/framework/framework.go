// Package framework is what cluster-backed test packages share: one local
// control plane per test package (started in TestMain), namespaces per test,
// object builders and polling helpers, and spillway's three binaries started
// as local processes against the cluster (StartExporter, StartController,
// StartAdapter, with InstallCRDs), which internal/demo builds the seed's
// environment from. Tests never sleep a fixed time; they poll a condition
// with a deadline.
package framework

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/deploy/chart"
	"github.com/spillway-dev/spillway/internal/localcluster"
)

// Main starts a cluster, runs the package's tests, dumps component logs when
// a test failed and stops the cluster. It returns the exit code for os.Exit.
func Main(m *testing.M, opts localcluster.Options, use func(*localcluster.Cluster)) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("skipping cluster-backed tests in -short mode")
		return 0
	}
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the local cluster:", err)
		return 1
	}
	use(c)
	code := m.Run()
	if code != 0 || os.Getenv("SPILLWAY_DUMP_LOGS") != "" {
		c.DumpLogs(os.Stderr, 8000)
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the local cluster:", err)
	}
	return code
}

// Namespace creates a namespace for one test and deletes it afterwards.
func Namespace(t *testing.T, c *localcluster.Cluster) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-")
	_, err := c.Client().CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = c.Client().CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// Eventually polls cond every interval until it returns true or timeout
// passes; on timeout the test fails with the last message cond gave.
func Eventually(t *testing.T, timeout, interval time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	if err := Poll(context.Background(), timeout, interval, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Poll is Eventually for cleanups, which must not stop at the first
// failure: it returns an error naming the last message instead of failing
// the test. It runs on localcluster.Poll, the one polling loop.
func Poll(ctx context.Context, timeout, interval time.Duration, cond func(ctx context.Context) (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var last string
	if err := localcluster.Poll(ctx, interval, "", func(ctx context.Context) (bool, error) {
		ok, msg := cond(ctx)
		// A check that ends within an interval of the deadline may have been
		// cut short by it: the client's rate limiter refuses a wait it
		// predicts would pass the deadline, before the deadline passes. Such
		// a check says only that; the check before it says what the cluster
		// looked like, which is what a failure needs.
		if last == "" || time.Until(deadline) > interval {
			last = msg
		}
		return ok, nil
	}); err != nil {
		return fmt.Errorf("timed out after %s; last: %s", timeout, last)
	}
	return nil
}

// GPUDeployment builds a Deployment of pods that each request one GPU plus
// the given CPU and memory, labelled app=<app>.
func GPUDeployment(ns, name, app string, replicas int32, cpu, mem string) *appsv1.Deployment {
	labels := map[string]string{"app": app}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(int64(0)),
					Containers: []corev1.Container{{
						Name:  "predictor",
						Image: "vllm/vllm-openai:latest",
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{
								corev1.ResourceCPU:       resource.MustParse(cpu),
								corev1.ResourceMemory:    resource.MustParse(mem),
								localcluster.GPUResource: resource.MustParse("1"),
							},
							Limits: corev1.ResourceList{localcluster.GPUResource: resource.MustParse("1")},
						},
					}},
				},
			},
		},
	}
}

// PodsByNode lists the Running pods matching a selector, keyed by node name.
func PodsByNode(ctx context.Context, c *localcluster.Cluster, ns, selector string) (map[string][]corev1.Pod, []corev1.Pod, error) {
	list, err := c.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, nil, err
	}
	running := map[string][]corev1.Pod{}
	var notRunning []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" {
			running[p.Spec.NodeName] = append(running[p.Spec.NodeName], p)
		} else if p.DeletionTimestamp == nil {
			notRunning = append(notRunning, p)
		}
	}
	return running, notRunning, nil
}

// NodesOfPool lists the nodes labelled spillway.dev/pool=<pool>.
func NodesOfPool(ctx context.Context, c *localcluster.Cluster, pool string) ([]corev1.Node, error) {
	list, err := c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: localcluster.PoolLabel + "=" + pool})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// ReadObjects decodes every non-empty document of a YAML fixture file.
func ReadObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := chart.Objects(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return objs
}

// ScrapeMetrics reads the plain-HTTP /metrics at addr and calls sample with
// each sample's series (name and labels) and value; comments and lines
// without a number are skipped.
func ScrapeMetrics(ctx context.Context, addr string, sample func(series string, v float64)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	return ParseExposition(resp.Body, sample)
}

// ParseExposition calls sample with each sample of a Prometheus text
// exposition (comments and lines without a number skipped).
func ParseExposition(r io.Reader, sample func(series string, v float64)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(line[sp+1:], 64); err == nil {
			sample(line[:sp], v)
		}
	}
	return sc.Err()
}
