package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// reactionScalers are stepped together in each trial.
var reactionScalers = []scaler{kedaDefault, kedaCached, spillwayHPA}

// reactionNamespace holds the reaction trials' Deployments.
const reactionNamespace = "peers-reaction"

// stepValue is the served total from which a step counts as seen: the
// step takes one replica from 30 % to 80 %.
const stepValue = 70

// stages are one trial's times for one scaler, each from the end of the
// one before: the load step → the first Prometheus sample with the new
// value (scrape) → the metrics API serving it through the aggregator
// (spillway's refresh, or KEDA's query or poll) → the Deployment's
// replicas raised (the HPA's sync) → the new pod bound to a node
// (ReplicaSet controller and scheduler) → that pod Ready (the node's
// kubelet: kwok). total is the step to Ready.
type stages struct {
	scrape, served, hpa, schedule, start, total time.Duration
}

// reactionResult is a scaler's stages over the trials.
type reactionResult struct {
	scaler scaler
	trials []stages
	errs   []string
}

// observer records, from watches, when each pod of a namespace was first
// seen, bound and Ready, and each Deployment's spec.replicas changes.
type observer struct {
	mu       sync.Mutex
	pods     map[string]*podTimes
	replicas map[string][]replicaChange
}

type podTimes struct {
	app                  string
	seen, bound, readyAt time.Time
}

type replicaChange struct {
	at       time.Time
	replicas int32
}

func observe(ctx context.Context, e *peerEnv, ns string) *observer {
	o := &observer{pods: map[string]*podTimes{}, replicas: map[string][]replicaChange{}}
	cs := e.c.Client()
	go o.watchLoop(ctx, func(ctx context.Context) (watch.Interface, error) {
		return cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	})
	go o.watchLoop(ctx, func(ctx context.Context) (watch.Interface, error) {
		return cs.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{})
	})
	return o
}

// watchLoop watches until ctx ends, watching again when the server ends a
// watch (a new watch lists the objects again; only first times count).
func (o *observer) watchLoop(ctx context.Context, start func(context.Context) (watch.Interface, error)) {
	for ctx.Err() == nil {
		w, err := start(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				continue
			}
		}
		for ev := range w.ResultChan() {
			o.record(time.Now(), ev.Object)
		}
		w.Stop()
	}
}

func (o *observer) record(now time.Time, obj any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch v := obj.(type) {
	case *corev1.Pod:
		p := o.pods[v.Name]
		if p == nil {
			p = &podTimes{app: v.Labels["app"], seen: now}
			o.pods[v.Name] = p
		}
		if p.bound.IsZero() && v.Spec.NodeName != "" {
			p.bound = now
		}
		if p.readyAt.IsZero() && podReady(v) {
			p.readyAt = now
		}
	case *appsv1.Deployment:
		r := deploymentReplicas(v)
		cs := o.replicas[v.Name]
		if len(cs) == 0 || cs[len(cs)-1].replicas != r {
			o.replicas[v.Name] = append(cs, replicaChange{at: now, replicas: r})
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podsOf are the names of the pods of app seen so far.
func (o *observer) podsOf(app string) map[string]bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]bool{}
	for name, p := range o.pods {
		if p.app == app {
			out[name] = true
		}
	}
	return out
}

// firstNewPod is the earliest seen pod of app not in before.
func (o *observer) firstNewPod(app string, before map[string]bool) (podTimes, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var best *podTimes
	for name, p := range o.pods {
		if p.app != app || before[name] {
			continue
		}
		if best == nil || p.seen.Before(best.seen) {
			best = p
		}
	}
	if best == nil {
		return podTimes{}, false
	}
	return *best, true
}

// raisedAt is when the Deployment's replicas first reached want after t.
func (o *observer) raisedAt(name string, want int32, t time.Time) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, c := range o.replicas[name] {
		if c.at.After(t) && c.replicas >= want {
			return c.at, true
		}
	}
	return time.Time{}, false
}

// runReaction steps every scaler's load from lowRPS (1 replica) to stepRPS
// (2) trials times and times each stage.
func runReaction(ctx context.Context, e *peerEnv, trials int) []reactionResult {
	ns := reactionNamespace
	results := make([]reactionResult, len(reactionScalers))
	for i, s := range reactionScalers {
		results[i].scaler = s
	}
	fail := func(err error) []reactionResult {
		for i := range results {
			results[i].errs = append(results[i].errs, err.Error())
		}
		return results
	}
	if err := e.createNamespace(ctx, ns); err != nil {
		return fail(err)
	}
	octx, stop := context.WithCancel(ctx)
	defer stop()
	obs := observe(octx, e, ns)
	for _, s := range reactionScalers {
		if err := e.createScaler(ctx, ns, s); err != nil {
			return fail(err)
		}
	}
	for trial := range trials {
		if err := ctx.Err(); err != nil {
			break
		}
		if err := e.setLoad(ctx, ns, reactionScalers, lowRPS); err != nil {
			return fail(err)
		}
		if err := e.waitReplicas(ctx, ns, reactionScalers, 1, 5*time.Minute); err != nil {
			return fail(fmt.Errorf("trial %d: settling at 1 replica: %w", trial+1, err))
		}
		// Until every served value is the low one, a step could be seen
		// before it happened.
		if err := e.waitServedBelow(ctx, ns, reactionScalers, peerTarget, 2*time.Minute); err != nil {
			return fail(fmt.Errorf("trial %d: %w", trial+1, err))
		}
		e.logf("reaction trial %d/%d: load %d → %d req/s on %v", trial+1, trials, lowRPS, stepRPS, names(reactionScalers))
		var wg sync.WaitGroup
		for i, s := range reactionScalers {
			before := obs.podsOf(s.name)
			t0 := time.Now()
			if err := e.load.SetLoad(ctx, ns, s.name, stepRPS); err != nil {
				return fail(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := e.timeStep(ctx, obs, ns, s, t0, before)
				if err != nil {
					results[i].errs = append(results[i].errs, fmt.Sprintf("trial %d: %v", trial+1, err))
					return
				}
				results[i].trials = append(results[i].trials, st)
			}()
		}
		wg.Wait()
	}
	return results
}

// waitServedBelow waits until every scaler's served value is below v.
func (e *peerEnv) waitServedBelow(ctx context.Context, ns string, ss []scaler, v float64, timeout time.Duration) error {
	for _, s := range ss {
		deadline := time.Now().Add(timeout)
		for {
			got, err := e.servedValue(ctx, ns, s)
			if err == nil && got < v {
				break
			}
			if time.Now().After(deadline) {
				if err != nil {
					return fmt.Errorf("%s before the step: %w", s.name, err)
				}
				return fmt.Errorf("%s still serves %g before the step", s.name, got)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil
}

// timeStep follows one scaler's step from t0: it polls the served value
// every 200 ms until it shows the step, waits for the new pod to be Ready,
// then reads the stage times from Prometheus's samples and the watches.
func (e *peerEnv) timeStep(ctx context.Context, obs *observer, ns string, s scaler, t0 time.Time, before map[string]bool) (stages, error) {
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var served time.Time
	for served.IsZero() {
		v, err := e.servedValue(wctx, ns, s)
		if err == nil && v >= stepValue {
			served = time.Now()
			break
		}
		select {
		case <-wctx.Done():
			if err != nil {
				return stages{}, fmt.Errorf("the step was never served: %w", err)
			}
			return stages{}, fmt.Errorf("the step was never served (last value %g)", v)
		case <-time.After(200 * time.Millisecond):
		}
	}
	var pod podTimes
	for {
		p, ok := obs.firstNewPod(s.name, before)
		if ok && !p.readyAt.IsZero() {
			pod = p
			break
		}
		select {
		case <-wctx.Done():
			return stages{}, fmt.Errorf("no new pod Ready (%s)", e.hpaState(ctx, ns, s))
		case <-time.After(200 * time.Millisecond):
		}
	}
	raised, ok := obs.raisedAt(s.name, 2, t0)
	if !ok {
		return stages{}, fmt.Errorf("a new pod is Ready but the Deployment's replicas were never seen raised")
	}
	samples, err := e.promSamples(ctx, ns, s.name, 5*time.Minute)
	if err != nil {
		return stages{}, err
	}
	i := slices.IndexFunc(samples, func(p promSample) bool { return !p.at.Before(t0) && p.v >= stepValue })
	if i < 0 {
		return stages{}, fmt.Errorf("no Prometheus sample of the step after %s", t0.Format(time.RFC3339Nano))
	}
	scraped := samples[i].at
	return stages{
		scrape:   scraped.Sub(t0),
		served:   served.Sub(scraped),
		hpa:      raised.Sub(served),
		schedule: pod.bound.Sub(raised),
		start:    pod.readyAt.Sub(pod.bound),
		total:    pod.readyAt.Sub(t0),
	}, nil
}
