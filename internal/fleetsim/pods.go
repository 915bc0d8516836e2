package fleetsim

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/internal/localcluster"
)

const podWorkers = 16

// CreatePods creates the fleet's namespace (if missing), its node and its
// pods bound to that node, which no kwok manages, then marks each Running,
// so nothing changes them while the adapters watch. They tolerate the
// node's not-ready/unreachable taints forever, because with no kubelet
// heartbeating it the node lifecycle controller taints the node and would
// otherwise evict all of them five minutes in. It returns the pod names by
// app. cfg is an admin config; its rate limits are lifted here.
func (f Fleet) CreatePods(ctx context.Context, cfg *rest.Config, log io.Writer) (map[string][]string, error) {
	return f.CreatePodsFrom(ctx, cfg, 0, log)
}

// CreatePodsFrom is CreatePods for the apps from firstApp on, for a fleet
// that grows: the pods of the apps before it exist already.
func (f Fleet) CreatePodsFrom(ctx context.Context, cfg *rest.Config, firstApp int, log io.Writer) (map[string][]string, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 500, 500
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if err := f.createNode(ctx, cs); err != nil {
		return nil, err
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.Namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating namespace %s: %w", f.Namespace, err)
	}
	// Pods are only created once the namespace's default ServiceAccount
	// exists (the ServiceAccount admission plugin would reject them).
	if err := f.waitServiceAccount(ctx, cs); err != nil {
		return nil, err
	}

	byApp := make(map[string][]string, f.Apps)
	type job struct{ app, pod string }
	jobs := make(chan job)
	var (
		wg       sync.WaitGroup
		done     atomic.Int64
		errOnce  sync.Once
		firstErr error
	)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for range podWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := f.createRunningPod(wctx, cs, j.app, j.pod); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				if n := done.Add(1); n%1000 == 0 {
					fmt.Fprintf(log, "[fleetsim] %d pods Running (%s)\n", n, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
feed:
	for a := firstApp; a < f.Apps; a++ {
		app := AppName(a)
		for p := range f.PodsPerApp {
			pod := PodName(app, p)
			byApp[app] = append(byApp[app], pod)
			select {
			case jobs <- job{app, pod}:
			case <-wctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "[fleetsim] %d pods Running in namespace %s in %s\n", done.Load(), f.Namespace, time.Since(start).Round(time.Second))
	return byApp, nil
}

func (f Fleet) createNode(ctx context.Context, cs kubernetes.Interface) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("4Ti"),
		corev1.ResourcePods:   resource.MustParse("100000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   f.Node,
			Labels: map[string]string{corev1.LabelHostname: f.Node},
		},
		// Unschedulable keeps the scheduler from placing anything else here.
		Spec:   corev1.NodeSpec{Unschedulable: true},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	_, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating node %s: %w", f.Node, err)
	}
	return nil
}

func (f Fleet) waitServiceAccount(ctx context.Context, cs kubernetes.Interface) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return localcluster.Poll(wctx, 300*time.Millisecond, "the default ServiceAccount in "+f.Namespace, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(f.Namespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
}

func (f Fleet) createRunningPod(ctx context.Context, cs kubernetes.Interface, app, name string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: f.Namespace,
			Labels:    map[string]string{"app": app},
		},
		Spec: corev1.PodSpec{
			NodeName:                     f.Node,
			AutomountServiceAccountToken: ptr.To(false),
			Containers:                   []corev1.Container{{Name: Container, Image: "registry.invalid/bench:0"}},
			Tolerations: []corev1.Toleration{
				{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
				{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			},
		},
	}
	created, err := cs.CoreV1().Pods(f.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = cs.CoreV1().Pods(f.Namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("creating pod %s: %w", name, err)
	}
	if created.Status.Phase == corev1.PodRunning {
		return nil
	}
	now := metav1.Now()
	created.Status.Phase = corev1.PodRunning
	created.Status.StartTime = &now
	if _, err := cs.CoreV1().Pods(f.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("marking pod %s Running: %w", name, err)
	}
	return nil
}
