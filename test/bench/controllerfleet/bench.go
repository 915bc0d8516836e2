package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/pkg/placement"
	"github.com/spillway-dev/spillway/test/framework"
)

const (
	// cloudPool is the spillway.dev/pool of the nodes every policy's
	// elastic unit selects.
	cloudPool = "cloud"
	// binder is the scheduler the fleet's pods name: none runs, and the
	// benchmark binds them itself.
	binder = "spillway-bench-binder"
	// burstLabel marks the pods of one burst (its index). Not under
	// spillway.dev: the webhook strips such keys from pods, and a
	// Deployment selecting on one would never own its pods.
	burstLabel = "spillway-bench/burst"
)

type bench struct {
	o      options
	stdout io.Writer
	log    io.Writer

	c  *localcluster.Cluster
	cs kubernetes.Interface // QPS lifted
	// nodes are the node names by pool.
	nodes map[string][]string
	next  sync.Map // pool → *atomic.Int64, round robin for unplaced pods
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "[controllerfleet] %s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func nsName(i int) string     { return fmt.Sprintf("fleet-%03d", i) }
func poolName(i int) string   { return fmt.Sprintf("onprem-%02d", i) }
func appName(j int) string    { return fmt.Sprintf("app-%d", j) }
func policyName(j int) string { return fmt.Sprintf("policy-%d", j) }

func (b *bench) run(ctx context.Context) (err error) {
	started := time.Now()
	binDir, err := filepath.Abs(b.o.binDir)
	if err != nil {
		return err
	}
	bins := []controllerBin{{name: b.o.name, dir: binDir, profile: b.o.profile}}
	if b.o.compareBinDir != "" {
		dir, err := filepath.Abs(b.o.compareBinDir)
		if err != nil {
			return err
		}
		bins = append(bins, controllerBin{name: b.o.compareName, dir: dir})
	}
	for _, cb := range bins {
		if _, err := os.Stat(filepath.Join(cb.dir, "spillway-controller")); err != nil {
			return fmt.Errorf("spillway-controller not found in %s: run 'make build' first", cb.dir)
		}
	}

	c, err := localcluster.Start(ctx, localcluster.Options{NoKarpenter: true, Log: b.log, KeepDir: b.o.keepDir})
	if err != nil {
		return fmt.Errorf("starting the local cluster: %w", err)
	}
	b.c = c
	defer func() { c.StopAfter(ctx, err, b.log) }()
	cfg := c.RESTConfig()
	cfg.QPS, cfg.Burst = 2000, 2000
	if b.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if err := framework.InstallCRDs(ctx, c, b.o.repoRoot); err != nil {
		return err
	}

	var fs fleetStats
	t := time.Now()
	if err := b.createNodes(ctx); err != nil {
		return err
	}
	fs.nodes = time.Since(t)
	t = time.Now()
	if err := b.createNamespacesAndPolicies(ctx, cfg); err != nil {
		return err
	}
	fs.policies = time.Since(t)

	// The fleet's pods are placed by a controller from --bin-dir, stopped
	// once they all run, so that each measured controller starts on the
	// whole fleet.
	b.logf("starting a controller to place the fleet's pods")
	ctl, err := framework.StartController(ctx, c, binDir, nil)
	if err != nil {
		return err
	}
	t = time.Now()
	fs.unplaced, err = b.createFleet(ctx)
	fs.create = time.Since(t)
	if err == nil {
		t = time.Now()
		err = b.waitFleetRunning(ctx)
		fs.running = time.Since(t)
	}
	if serr := ctl.Proc.Stop(); serr != nil && err == nil {
		err = fmt.Errorf("stopping the controller that placed the fleet: %w", serr)
	}
	if err != nil {
		return err
	}

	// The report is written after each controller, so that a run cut
	// short keeps what it measured.
	var runs []controllerRun
	for i, cb := range bins {
		r, err := b.measure(ctx, cb, i)
		if err != nil {
			return fmt.Errorf("%s: %w", cb.name, err)
		}
		runs = append(runs, r)
		text := report{when: started, o: b.o, fleet: fs, runs: runs, duration: time.Since(started)}.markdown()
		if err := b.write(text); err != nil {
			return err
		}
		if i == len(bins)-1 {
			fmt.Fprint(b.stdout, text)
		}
	}
	return nil
}

func (b *bench) write(text string) error {
	if err := os.MkdirAll(b.o.outDir, 0o755); err != nil {
		return err
	}
	out := filepath.Join(b.o.outDir, "controller-fleet.md")
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		return err
	}
	b.logf("wrote %s", out)
	return nil
}

// fleetStats are how long building the fleet took.
type fleetStats struct {
	nodes, policies, create, running time.Duration
	// unplaced counts fleet pods the webhook admitted without a unit.
	unplaced int
}

// podsPerNode is how many fleet pods one on-prem node holds.
func (o options) podsPerNode() int {
	n := o.pools * o.nodesPerPool
	return (o.pods + n - 1) / n
}

// nodeGPUs is each node's GPU capacity: room for its share of the fleet
// twice over (pools are unevenly loaded when namespaces do not divide
// evenly) and for a whole burst spread over its pool.
func (o options) nodeGPUs() int {
	return 2*o.podsPerNode() + (o.burst+o.nodesPerPool-1)/o.nodesPerPool + 8
}

// createNodes creates the on-prem pools and the cloud pool as kwok nodes
// and waits until every one is Ready and untainted.
func (b *bench) createNodes(ctx context.Context) error {
	b.nodes = map[string][]string{}
	gpus := b.o.nodeGPUs()
	type job struct{ pool, name string }
	var jobs []job
	for p := range b.o.pools {
		for i := range b.o.nodesPerPool {
			jobs = append(jobs, job{poolName(p), fmt.Sprintf("%s-%d", poolName(p), i)})
		}
	}
	for i := range b.o.cloudNodes {
		jobs = append(jobs, job{cloudPool, fmt.Sprintf("%s-%d", cloudPool, i)})
	}
	for _, j := range jobs {
		b.nodes[j.pool] = append(b.nodes[j.pool], j.name)
	}
	b.logf("creating %d kwok nodes (%d GPUs, %d pods each)", len(jobs), gpus, gpus+16)
	err := parallel(ctx, len(jobs), 16, func(ctx context.Context, i int) error {
		return b.createNode(ctx, jobs[i].pool, jobs[i].name, gpus)
	})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return framework.Poll(wctx, 5*time.Minute, 2*time.Second, func(ctx context.Context) (bool, string) {
		list, err := b.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return false, err.Error()
		}
		ready := 0
		for i := range list.Items {
			if nodeUsable(&list.Items[i]) {
				ready++
			}
		}
		return ready >= len(jobs), fmt.Sprintf("%d of %d nodes Ready and untainted", ready, len(jobs))
	})
}

func nodeUsable(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
			return false
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func (b *bench) createNode(ctx context.Context, pool, name string, gpus int) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:       *resource.NewQuantity(int64(4*gpus), resource.DecimalSI),
		corev1.ResourceMemory:    *resource.NewQuantity(int64(gpus)*16<<30, resource.BinarySI),
		corev1.ResourcePods:      *resource.NewQuantity(int64(gpus+16), resource.DecimalSI),
		localcluster.GPUResource: *resource.NewQuantity(int64(gpus), resource.DecimalSI),
	}
	zone := "onprem-zone"
	if pool == cloudPool {
		zone = "cloud-zone-a"
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{localcluster.KwokAnnotation: "fake"},
			Labels: map[string]string{
				localcluster.PoolLabel:   pool,
				corev1.LabelHostname:     name,
				corev1.LabelOSStable:     "linux",
				corev1.LabelArchStable:   "amd64",
				"type":                   "kwok",
				corev1.LabelTopologyZone: zone,
			},
		},
		Spec:   corev1.NodeSpec{ProviderID: "kwok://" + name},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	if _, err := b.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	return nil
}

// createNamespacesAndPolicies creates the namespaces, waits for their
// default ServiceAccounts (pods are refused before), and creates the
// policies.
func (b *bench) createNamespacesAndPolicies(ctx context.Context, cfg *rest.Config) error {
	scheme, err := kubescheme.New()
	if err != nil {
		return err
	}
	// The client logs nothing this program wants; without a logger
	// controller-runtime prints a stack trace saying so.
	ctrllog.SetLogger(logr.Discard())
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	b.logf("creating %d namespaces and %d ResourcePolicies", b.o.namespaces, b.o.namespaces*b.o.policiesPerNamespace)
	if err := parallel(ctx, b.o.namespaces, 16, func(ctx context.Context, i int) error {
		_, err := b.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i)}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", nsName(i), err)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := framework.Poll(ctx, 5*time.Minute, time.Second, func(ctx context.Context) (bool, string) {
		list, err := b.cs.CoreV1().ServiceAccounts("").List(ctx, metav1.ListOptions{ResourceVersion: "0", FieldSelector: "metadata.name=default"})
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, sa := range list.Items {
			if len(sa.Namespace) > 6 && sa.Namespace[:6] == "fleet-" {
				n++
			}
		}
		return n >= b.o.namespaces, fmt.Sprintf("%d of %d namespaces have their default ServiceAccount", n, b.o.namespaces)
	}); err != nil {
		return err
	}
	total := b.o.namespaces * b.o.policiesPerNamespace
	return parallel(ctx, total, 16, func(ctx context.Context, k int) error {
		i, j := k/b.o.policiesPerNamespace, k%b.o.policiesPerNamespace
		rp := &v1alpha1.ResourcePolicy{
			ObjectMeta: metav1.ObjectMeta{Name: policyName(j), Namespace: nsName(i)},
			Spec: v1alpha1.ResourcePolicySpec{
				Selector: map[string]v1alpha1.LabelValue{"app": appName(j)},
				Units: []v1alpha1.Unit{
					{Name: "onprem", Resource: "ecs", NodeSelector: map[string]v1alpha1.NodeSelectorValue{localcluster.PoolLabel: poolName(i % b.o.pools)}},
					{Name: "cloud", Resource: v1alpha1.ResourceElastic, NodeSelector: map[string]v1alpha1.NodeSelectorValue{localcluster.PoolLabel: cloudPool}},
				},
			},
		}
		if err := cl.Create(ctx, rp); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating ResourcePolicy %s/%s: %w", rp.Namespace, rp.Name, err)
		}
		return nil
	})
}

// predictorPod is a KServe-predictor-shaped pod of app j in namespace ns:
// the model server with one GPU and a queue-proxy sidecar, the labels,
// annotations, environment and volumes KServe gives one.
func predictorPod(ns string, j int, name string) *corev1.Pod {
	app := appName(j)
	isvc := fmt.Sprintf("llm-%d", j)
	env := []corev1.EnvVar{
		{Name: "MODEL_ID", Value: "qwen2.5-7b-instruct"},
		{Name: "PORT", Value: "8080"},
		{Name: "K_REVISION", Value: isvc + "-predictor-00001"},
		{Name: "K_CONFIGURATION", Value: isvc + "-predictor"},
		{Name: "K_SERVICE", Value: isvc + "-predictor"},
		{Name: "STORAGE_URI", Value: "s3://models/qwen2.5-7b-instruct"},
		{Name: "HF_HUB_OFFLINE", Value: "1"},
		{Name: "VLLM_WORKER_MULTIPROC_METHOD", Value: "spawn"},
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: ns,
			Labels: map[string]string{
				"app":                                app,
				"component":                          "predictor",
				"serving.kserve.io/inferenceservice": isvc,
				"serving.knative.dev/configuration":  isvc + "-predictor",
				"serving.knative.dev/revision":       isvc + "-predictor-00001",
				"serving.knative.dev/service":        isvc + "-predictor",
				"app.kubernetes.io/name":             "vllm",
				"pod-template-hash":                  "7d9c5b6f4",
			},
			Annotations: map[string]string{
				"autoscaling.knative.dev/class":           "hpa.autoscaling.knative.dev",
				"serving.kserve.io/deploymentMode":        "RawDeployment",
				"prometheus.io/scrape":                    "true",
				"prometheus.io/port":                      "8080",
				"kubectl.kubernetes.io/default-container": "kserve-container",
			},
		},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To(int64(0)),
			Containers: []corev1.Container{
				{
					Name:  "kserve-container",
					Image: "vllm/vllm-openai:v0.11.0",
					Args:  []string{"--model=/mnt/models", "--served-model-name=qwen2.5-7b-instruct", "--port=8080", "--max-model-len=8192", "--gpu-memory-utilization=0.9"},
					Env:   env,
					Ports: []corev1.ContainerPort{{Name: "http1", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{
							corev1.ResourceCPU:       resource.MustParse("1"),
							corev1.ResourceMemory:    resource.MustParse("4Gi"),
							localcluster.GPUResource: resource.MustParse("1"),
						},
						Limits: corev1.ResourceList{localcluster.GPUResource: resource.MustParse("1")},
					},
					VolumeMounts: []corev1.VolumeMount{{Name: "models", MountPath: "/mnt/models", ReadOnly: true}, {Name: "shm", MountPath: "/dev/shm"}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 10,
					},
				},
				{
					Name:  "queue-proxy",
					Image: "gcr.invalid/knative-serving/queue:v1.15.0",
					Env:   []corev1.EnvVar{{Name: "SERVING_NAMESPACE", Value: ns}, {Name: "SERVING_SERVICE", Value: isvc + "-predictor"}, {Name: "QUEUE_SERVING_PORT", Value: "8012"}},
					Ports: []corev1.ContainerPort{{Name: "queue-port", ContainerPort: 8012, Protocol: corev1.ProtocolTCP}},
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU:    resource.MustParse("25m"),
						corev1.ResourceMemory: resource.MustParse("64Mi"),
					}},
				},
			},
			Volumes: []corev1.Volume{
				// Where KServe's storage initializer downloads an s3:// model:
				// an emptyDir, which (unlike a claim that does not exist
				// here) lets kube-scheduler bind the burst pods.
				{Name: "models", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "shm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
			},
		},
	}
}

// createFleet creates the fleet's pods through the webhook and binds each
// to the node the webhook reserved, or to a node of the pool its unit's
// affinity names. It returns how many the webhook left unplaced (bound to
// their namespace's pool all the same).
func (b *bench) createFleet(ctx context.Context) (int, error) {
	perPolicy := b.o.pods / (b.o.namespaces * b.o.policiesPerNamespace)
	b.logf("creating %d pods (%d per policy), %d at once", b.o.pods, perPolicy, b.o.createConcurrency)
	var done, unplaced atomic.Int64
	start := time.Now()
	err := parallel(ctx, b.o.pods, b.o.createConcurrency, func(ctx context.Context, k int) error {
		// Namespace-major, so that each pool fills evenly from the start.
		ns := k % b.o.namespaces
		rest := k / b.o.namespaces
		j, idx := rest%b.o.policiesPerNamespace, rest/b.o.policiesPerNamespace
		pod := predictorPod(nsName(ns), j, fmt.Sprintf("%s-%04d", appName(j), idx))
		pod.Spec.SchedulerName = binder
		placed, err := b.createBound(ctx, pod, poolName(ns%b.o.pools))
		if err != nil {
			return err
		}
		if !placed {
			unplaced.Add(1)
		}
		if n := done.Add(1); n%5000 == 0 {
			b.logf("  %d pods created and bound (%.0f/s)", n, float64(n)/time.Since(start).Seconds())
		}
		return nil
	})
	return int(unplaced.Load()), err
}

// createBound creates pod (or reads it when it exists) and binds it unless
// it is bound already; placed reports whether the webhook placed it.
func (b *bench) createBound(ctx context.Context, pod *corev1.Pod, fallbackPool string) (placed bool, err error) {
	created, err := b.cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = b.cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	}
	if err != nil {
		return false, fmt.Errorf("creating pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	placed = created.Labels[placement.LabelUnit] != ""
	if created.Spec.NodeName != "" {
		return placed, nil
	}
	node := created.Annotations[placement.AnnotationReservedNode]
	if node == "" {
		node = b.pick(affinityPool(created, fallbackPool))
	}
	err = b.cs.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: created.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) {
		return placed, fmt.Errorf("binding pod %s/%s to %s: %w", pod.Namespace, pod.Name, node, err)
	}
	return placed, nil
}

// affinityPool is the spillway.dev/pool value the pod's required node
// affinity asks for (the webhook writes the unit's node selector there),
// or fallback.
func affinityPool(p *corev1.Pod, fallback string) string {
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return fallback
	}
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, e := range t.MatchExpressions {
			if e.Key == localcluster.PoolLabel && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) == 1 {
				return e.Values[0]
			}
		}
	}
	return fallback
}

// pick is the next node of pool, round robin.
func (b *bench) pick(pool string) string {
	names := b.nodes[pool]
	if len(names) == 0 {
		names = b.nodes[poolName(0)]
	}
	v, _ := b.next.LoadOrStore(pool, new(atomic.Int64))
	i := v.(*atomic.Int64).Add(1)
	return names[int(i)%len(names)]
}

// waitFleetRunning waits until kwok has marked every fleet pod Running,
// listing only those that are not (from the watch cache).
func (b *bench) waitFleetRunning(ctx context.Context) error {
	b.logf("waiting for kwok to mark the pods Running")
	return framework.Poll(ctx, 30*time.Minute, 5*time.Second, func(ctx context.Context) (bool, string) {
		list, err := b.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0", FieldSelector: "status.phase!=Running"})
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, p := range list.Items {
			if len(p.Namespace) > 6 && p.Namespace[:6] == "fleet-" {
				n++
			}
		}
		if n > 0 {
			b.logf("  %d fleet pods not Running yet", n)
		}
		return n == 0, strconv.Itoa(n) + " fleet pods not Running"
	})
}

// parallel runs f(0..n-1) with at most workers at once and returns the
// first error (the others are cancelled).
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		errOnce  sync.Once
		firstErr error
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
