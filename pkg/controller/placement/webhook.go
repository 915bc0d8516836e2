// Package placement is the mutating admission webhook that places a new pod
// selected by a ResourcePolicy on one of the policy's units: it pins the pod
// there with a required node affinity and labels it with the policy and the
// unit. The rules live in pkg/placement; this package reads the cluster
// (through the manager's cache) and writes the admission patch.
package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	rules "github.com/spillway-dev/spillway/pkg/placement"
)

// Field indexes on pods the webhook reads through the cache.
const (
	// IndexOccupiedNode indexes pods by rules.OccupiedNode.
	IndexOccupiedNode = "spillway.dev/occupied-node"
	// IndexPlacementID indexes pods by rules.AnnotationPlacementID.
	IndexPlacementID = "spillway.dev/placement-id"
)

// EventRecorder is the part of the events.k8s.io recorder the webhook uses.
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Webhook answers pod CREATE admission requests.
type Webhook struct {
	reader   client.Reader
	decoder  admission.Decoder
	tracker  *rules.Tracker
	recorder EventRecorder
	metrics  *Metrics
	clock    clock.PassiveClock
}

// New returns the webhook. reader must serve the field indexes above (the
// manager's cache, after Register's IndexField calls). tracker is shared
// with the re-placement controller.
func New(reader client.Reader, decoder admission.Decoder, tracker *rules.Tracker, recorder EventRecorder, metrics *Metrics, clk clock.PassiveClock) *Webhook {
	return &Webhook{reader: reader, decoder: decoder, tracker: tracker, recorder: recorder, metrics: metrics, clock: clk}
}

// Handle places the pod, or admits it unchanged when no policy selects it.
// It never fails a request because of its own trouble: it admits the pod
// unplaced with a warning, and the ResourcePolicy controller reports such
// pods. The only refusal is the required strategy with every unit at max.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := w.clock.Now()
	defer func() { w.metrics.Duration.Observe(w.clock.Since(start).Seconds()) }()

	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return admission.Allowed("spillway places pods on creation only")
	}
	pod := &corev1.Pod{}
	if err := w.decoder.Decode(req, pod); err != nil {
		w.metrics.Errors.WithLabelValues("decode").Inc()
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the pod: %w", err))
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	if _, done := pod.Labels[rules.LabelPolicy]; done {
		// Already placed: a reinvocation after another webhook's change.
		return admission.Allowed("already placed")
	}
	if pod.Spec.NodeName != "" {
		return admission.Allowed("pod names its node; nothing to place")
	}

	resp, err := w.place(ctx, req, pod)
	if err != nil {
		w.metrics.Errors.WithLabelValues("read").Inc()
		log.FromContext(ctx).Error(err, "placing pod unplaced", "namespace", pod.Namespace, "generateName", pod.GenerateName, "name", pod.Name)
		return admission.Allowed("").WithWarnings("spillway could not place this pod, so it was created without a unit: " + err.Error())
	}
	return resp
}

func (w *Webhook) place(ctx context.Context, req admission.Request, pod *corev1.Pod) (admission.Response, error) {
	var policies v1alpha1.ResourcePolicyList
	if err := w.reader.List(ctx, &policies, client.InNamespace(pod.Namespace)); err != nil {
		return admission.Response{}, fmt.Errorf("listing ResourcePolicies: %w", err)
	}
	rp, _ := rules.Winner(policies.Items, pod)
	if rp == nil {
		return admission.Allowed("no ResourcePolicy selects the pod"), nil
	}
	if len(rp.Spec.Units) == 0 {
		return admission.Allowed(""), fmt.Errorf("ResourcePolicy %s has no units", rp.Name)
	}
	req0 := rules.PodRequests(pod)

	var seenErr error
	tx := w.tracker.Begin(func(id string) bool {
		var pods corev1.PodList
		if err := w.reader.List(ctx, &pods, client.MatchingFields{IndexPlacementID: id}); err != nil {
			seenErr = err
			return false
		}
		return len(pods.Items) > 0
	})
	defer tx.Done()
	if seenErr != nil {
		return admission.Response{}, fmt.Errorf("looking up placed pods: %w", seenErr)
	}
	inflight := tx.InFlight()
	states, err := w.unitStates(ctx, tx, rp, pod, req0, inflight)
	if err != nil {
		return admission.Response{}, err
	}
	d := rules.Choose(&rp.Spec, states)
	names := rules.DisplayNames(rp)
	if d.Deny {
		w.metrics.Denied.WithLabelValues(rp.Namespace, rp.Name).Inc()
		msg := fmt.Sprintf("ResourcePolicy %s: %s", rp.Name, d.Explain(names))
		w.recorder.Eventf(rp, nil, corev1.EventTypeWarning, "PodDenied", "Place", "refused a pod (generateName %q): %s", pod.GenerateName, d.Explain(names))
		return admission.Denied(msg), nil
	}

	unit := rules.UnitLabel(rp, d.Unit)
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[rules.LabelPolicy] = rp.Name
	pod.Labels[rules.LabelUnit] = unit
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[rules.AnnotationPlacementID] = string(req.UID)
	if d.Node != "" {
		pod.Annotations[rules.AnnotationReservedNode] = d.Node
	}
	if d.Unit != rules.Outside {
		rules.PinToUnit(&pod.Spec, rp.Spec.Units[d.Unit].NodeSelector)
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		w.metrics.Errors.WithLabelValues("encode").Inc()
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the placed pod: %w", err)), nil
	}
	tx.Reserve(rules.Reservation{ID: string(req.UID), Policy: rules.PolicyKey(rp), Unit: unit, Node: d.Node, Requests: req0})
	w.metrics.Placements.WithLabelValues(rp.Namespace, rp.Name, unit).Inc()
	log.FromContext(ctx).V(1).Info("placed pod", "policy", rp.Name, "generateName", pod.GenerateName, "name", pod.Name, "decision", d.Explain(names))
	return admission.PatchResponseFromRaw(req.Object.Raw, raw), nil
}

// unitStates counts the policy's pods per unit (in-flight placements
// included) and, under LackResourceOrExceedMax, looks for room in every unit
// but the last.
func (w *Webhook) unitStates(ctx context.Context, tx *rules.Txn, rp *v1alpha1.ResourcePolicy, pod *corev1.Pod, req corev1.ResourceList, inflight []rules.Reservation) ([]rules.UnitState, error) {
	states := make([]rules.UnitState, len(rp.Spec.Units))
	var pods corev1.PodList
	if err := w.reader.List(ctx, &pods, client.InNamespace(rp.Namespace), client.MatchingLabels(rp.Spec.Selector)); err != nil {
		return nil, fmt.Errorf("listing selected pods: %w", err)
	}
	nodes := map[string]*corev1.Node{}
	var nodeErr error
	counts := rules.Counts(rp, pods.Items, func(name string) *corev1.Node {
		n, err := w.node(ctx, nodes, name)
		nodeErr = errors.Join(nodeErr, err)
		return n
	})
	if nodeErr != nil {
		return nil, nodeErr
	}
	for i, c := range counts {
		states[i].Count = c
	}
	key := rules.PolicyKey(rp)
	for _, r := range inflight {
		if r.Policy != key {
			continue
		}
		if u, ok := rules.UnitIndex(rp, r.Unit); ok && u != rules.Outside {
			states[u].Count++
		}
	}
	needRoom := rules.NextUnitPolicy(&rp.Spec) == v1alpha1.LackResourceOrExceedMax
	for i := range rp.Spec.Units {
		states[i].CoolingDown = tx.CoolingDown(rules.UnitKey{Policy: key, Unit: rules.UnitLabel(rp, i)}) ||
			rules.StatusCoolingDown(rp, i, w.clock.Now())
		if !needRoom || i == len(rp.Spec.Units)-1 {
			continue
		}
		usage, err := w.unitNodes(ctx, &rp.Spec.Units[i])
		if err != nil {
			return nil, err
		}
		states[i].RoomNode, states[i].Room = rules.RoomNode(pod, req, usage, inflight)
	}
	return states, nil
}

func (w *Webhook) node(ctx context.Context, cache map[string]*corev1.Node, name string) (*corev1.Node, error) {
	if n, ok := cache[name]; ok {
		return n, nil
	}
	n := &corev1.Node{}
	if err := w.reader.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return nil, fmt.Errorf("reading node %s: %w", name, err)
		}
		n = nil
	}
	cache[name] = n
	return n, nil
}

// unitNodes lists the unit's nodes with the pods occupying each.
func (w *Webhook) unitNodes(ctx context.Context, u *v1alpha1.Unit) ([]rules.NodeUsage, error) {
	var nodes corev1.NodeList
	if err := w.reader.List(ctx, &nodes, client.MatchingLabels(u.NodeSelector)); err != nil {
		return nil, fmt.Errorf("listing unit nodes: %w", err)
	}
	out := make([]rules.NodeUsage, 0, len(nodes.Items))
	for i := range nodes.Items {
		n := &nodes.Items[i]
		var pods corev1.PodList
		if err := w.reader.List(ctx, &pods, client.MatchingFields{IndexOccupiedNode: n.Name}); err != nil {
			return nil, fmt.Errorf("listing pods on node %s: %w", n.Name, err)
		}
		usage := rules.NodeUsage{Node: n, Pods: make([]*corev1.Pod, len(pods.Items))}
		for j := range pods.Items {
			usage.Pods[j] = &pods.Items[j]
		}
		out = append(out, usage)
	}
	return out, nil
}

// IndexOccupiedNodeFunc and IndexPlacementIDFunc compute the field indexes;
// Register installs them on the manager's cache and tests on a fake client.
func IndexOccupiedNodeFunc(o client.Object) []string {
	if n := rules.OccupiedNode(o.(*corev1.Pod)); n != "" {
		return []string{n}
	}
	return nil
}

// IndexPlacementIDFunc indexes pods by their placement ID annotation.
func IndexPlacementIDFunc(o client.Object) []string {
	if id := o.GetAnnotations()[rules.AnnotationPlacementID]; id != "" {
		return []string{id}
	}
	return nil
}
