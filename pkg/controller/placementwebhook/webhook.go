// Package placementwebhook is the mutating admission webhook that places a new pod
// selected by a ResourcePolicy on one of the policy's units: it pins the pod
// there with a required node affinity and labels it with the policy and the
// unit. The rules live in pkg/placement; this package reads the cluster
// (through the manager's cache) and writes the admission patch.
//
// Every tenant is hostile: the spillway.dev/ keys a pod is created with are
// stripped (only spillway writes them), the placement spillway writes is
// signed so that capacity accounting can tell it from a forgery, dry runs
// reserve nothing, and the webhook can require the API server's client
// certificate (ClientAuth) so that nobody else can post admission reviews.
package placementwebhook

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
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

// Reasons of the errors metric: why a request was answered without a
// placement.
const (
	reasonDecode = "decode" // the pod could not be decoded
	reasonRead   = "read"   // reading the cluster (the cache) failed
	reasonEncode = "encode" // the patch could not be encoded
	reasonKey    = "key"    // the signing key could not be loaded
	reasonPanic  = "panic"  // the handler panicked
)

// PreviousKeyGrace is how long signatures made with the previous signing
// key still verify after the serving key changed. Only pods still waiting
// for the scheduler need their signature; a day covers pods waiting for
// new cloud nodes many times over.
const PreviousKeyGrace = 24 * time.Hour

// maxDecisions bounds how often one admission decides again because another
// policy reserved room on the same nodes meanwhile (Txn.TryReserve).
const maxDecisions = 3

// Webhook answers pod CREATE admission requests.
type Webhook struct {
	reader    client.Reader
	decoder   admission.Decoder
	tracker   *rules.Tracker
	recorder  events.EventRecorder
	metrics   *metrics
	clock     clock.PassiveClock
	keySource KeySource
	keys      *rules.Keyring
	// shared publishes reservations into units with a max to every
	// replica; nil keeps them in this process only (unit tests).
	shared *sharedReservations
	// virtual describes the cluster's virtual nodes (for virtual units).
	virtual rules.VirtualNodes
	// auth, when set, is required of every client (see Options).
	auth *ClientAuth
	// pods is the pod informer's index (Register sets it); nil reads
	// pods through reader's lists.
	pods podIndex
	// nodes is the node informer's store (Register sets it); nil reads
	// nodes through reader.
	nodes nodeStore
	// ledger sums each node's bound pods from the pod informer's events
	// (Register sets it); nil adds up the pods on a node at each review.
	ledger *rules.Ledger
	// ledgerSynced reports whether the ledger has been handed the first
	// list of pods; nil means it was built complete (tests).
	ledgerSynced func() bool
	// storesSynced reports whether the pod and node informers have
	// listed everything; until then pods and nodes are read through
	// reader, which waits for them (an empty store would show empty
	// nodes and no pods counted toward a max). Nil means they are
	// complete (tests).
	storesSynced func() bool
}

// podIndex is an informer's index of pods. ByIndex hands out the cache's
// own objects: a review reads the policy's pods and every pod on its
// unit's nodes, and at fleet size copying each into a list was most of a
// review's CPU and garbage. Nothing may write to what it returns.
type podIndex interface {
	ByIndex(indexName, indexedValue string) ([]any, error)
}

// nodeStore is an informer's store of nodes. Like podIndex it hands out
// the cache's own objects: a review reads a unit's nodes and the node of
// each of the policy's pods, and the reader's copies of them were most of
// a review's garbage at fleet size.
type nodeStore interface {
	List() []any
	GetByKey(key string) (item any, exists bool, err error)
}

// Options configures the webhook.
type Options struct {
	// Tracker is shared with the re-placement controller (spillover),
	// whose cooldowns it reads.
	Tracker *rules.Tracker
	// Clock stamps reservations and signing-key rotations; nil means the
	// real clock.
	Clock clock.PassiveClock
	// Keys supplies the secret the placement signing key is derived from;
	// every replica must get the same secret (see KeySource).
	Keys KeySource
	// ClientAuth, when set, restricts the webhook to clients with an
	// accepted certificate; its Configure must also be among the webhook
	// server's TLS options. Nil serves any client.
	ClientAuth *ClientAuth
	// VirtualNodes are the virtual nodes' label and taint, which virtual
	// units without a nodeSelector select; zero means virtual-kubelet's
	// conventions.
	VirtualNodes rules.VirtualNodes
}

// EventSource is the name events of the webhook carry.
const EventSource = "spillway-placement"

// ShareReservations makes the webhook keep its reservations into units
// with a max in the ResourcePolicy's status, read fresh from apiReader (not
// a cache) and written through c with optimistic concurrency, so that max
// holds across any number of replicas.
func (w *Webhook) ShareReservations(apiReader client.Reader, c client.Client) *Webhook {
	w.shared = &sharedReservations{apiReader: apiReader, client: c, clock: w.clock, ttl: w.tracker.TTL(), metrics: w.metrics}
	return w
}

// New returns the webhook; its metrics are registered on reg. reader must
// serve the field indexes above (the manager's cache, after Register's
// IndexField calls).
func New(reader client.Reader, decoder admission.Decoder, recorder events.EventRecorder, reg prometheus.Registerer, opts Options) (*Webhook, error) {
	var errs []error
	if opts.Tracker == nil {
		errs = append(errs, errors.New("placementwebhook: no placement tracker"))
	}
	if opts.Keys == nil {
		errs = append(errs, errors.New("placementwebhook: no source for the placement signing key"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("placementwebhook: %w", err)
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Webhook{reader: reader, decoder: decoder, tracker: opts.Tracker, recorder: recorder, metrics: m, clock: clk,
		keySource: opts.Keys, keys: rules.NewKeyring(clk, PreviousKeyGrace), virtual: opts.VirtualNodes.OrDefault(), auth: opts.ClientAuth}, nil
}

// Handle places the pod, or admits it unplaced when no policy selects it.
// It never fails a request because of its own trouble, a panic included:
// like failurePolicy: Ignore, it admits the pod unplaced with a warning and
// counts the error, and the ResourcePolicy controller reports such pods.
// The only refusal is the required strategy with every unit at max.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) (resp admission.Response) {
	start := w.clock.Now()
	defer func() { w.metrics.Duration.Observe(w.clock.Since(start).Seconds()) }()
	defer func() {
		if r := recover(); r != nil {
			w.metrics.Errors.WithLabelValues(reasonPanic).Inc()
			log.FromContext(ctx).Error(fmt.Errorf("panic: %v", r), "placement webhook failed; admitting the pod unchanged",
				"namespace", req.Namespace, "uid", req.UID, "stack", string(debug.Stack()))
			resp = admission.Allowed("").WithWarnings("spillway could not place this pod because of an internal error, so it was created without a unit")
		}
	}()
	return w.handle(ctx, req)
}

func (w *Webhook) handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return admission.Allowed("spillway places pods on creation only")
	}
	pod := &corev1.Pod{}
	if err := w.decoder.Decode(req, pod); err != nil {
		w.metrics.Errors.WithLabelValues(reasonDecode).Inc()
		log.FromContext(ctx).Error(err, "decoding the pod; admitting it unchanged", "namespace", req.Namespace, "uid", req.UID)
		return admission.Allowed("").WithWarnings("spillway could not decode this pod, so it was created without a unit: " + err.Error())
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	// Whatever spillway.dev/ keys the pod arrives with were written by its
	// creator (spillway's own are set below, after this), so they go,
	// whether a policy selects the pod or not: spillway's keys mean
	// something only when spillway wrote them.
	p := stripReserved(pod)
	had := hasObjects(req.Object.Raw, "metadata", "spec")
	p.hadMetadata, p.hadSpec = had[0], had[1]
	if pod.Spec.NodeName != "" {
		return w.respond(ctx, p, "pod names its node; nothing to place")
	}
	resp, err := w.place(ctx, req, pod, p)
	if err != nil {
		w.metrics.Errors.WithLabelValues(reasonRead).Inc()
		log.FromContext(ctx).Error(err, "placing pod unplaced", "namespace", pod.Namespace, "generateName", pod.GenerateName, "name", pod.Name)
		// A decision made before the error (then decided again) is not
		// reserved: drop it, keep only the stripping.
		p.set(nil, nil)
		p.affinity = nil
		return w.respond(ctx, p, "").WithWarnings("spillway could not place this pod, so it was created without a unit: " + err.Error())
	}
	return resp
}

// respond admits the pod with the patch's operations.
func (w *Webhook) respond(ctx context.Context, p *podPatch, msg string) admission.Response {
	resp, err := p.response(msg)
	if err != nil {
		w.metrics.Errors.WithLabelValues(reasonEncode).Inc()
		log.FromContext(ctx).Error(err, "encoding the placement patch; admitting the pod unchanged")
		return admission.Allowed("").WithWarnings("spillway could not encode its placement, so this pod was created without a unit")
	}
	return resp
}

// refreshKeys loads the signing key's source; on failure the keys loaded
// before (if any) stay in use.
func (w *Webhook) refreshKeys(ctx context.Context) {
	secret, err := w.keySource()
	if err == nil {
		err = w.keys.Update(secret)
	}
	if err != nil {
		w.metrics.Errors.WithLabelValues(reasonKey).Inc()
		log.FromContext(ctx).Error(err, "loading the placement signing key")
	}
}

func (w *Webhook) place(ctx context.Context, req admission.Request, pod *corev1.Pod, p *podPatch) (admission.Response, error) {
	var policies v1alpha1.ResourcePolicyList
	if err := w.reader.List(ctx, &policies, client.InNamespace(pod.Namespace)); err != nil {
		return admission.Response{}, fmt.Errorf("listing ResourcePolicies: %w", err)
	}
	rp, _ := rules.Winner(policies.Items, pod)
	if rp == nil {
		return w.respond(ctx, p, "no ResourcePolicy selects the pod"), nil
	}
	rp = w.virtual.Resolve(rp)
	if len(rp.Spec.Units) == 0 {
		return admission.Response{}, fmt.Errorf("ResourcePolicy %s has no units", rp.Name)
	}
	if k := rules.MissingGroupKey(rp, pod); k != "" {
		// As in ACK: max is counted per group of these labels, and a pod
		// outside every group cannot be counted.
		w.metrics.Denied.WithLabelValues(rp.Namespace, rp.Name).Inc()
		return admission.Denied(fmt.Sprintf("ResourcePolicy %s counts its pods per value of spec.matchLabelKeys, and this pod has no label %q: add it to the pod template or remove it from the policy", rp.Name, k)), nil
	}
	w.refreshKeys(ctx)
	req0 := rules.PodRequests(pod)
	key := rules.PolicyKey(rp)
	// A dry run (kubectl --dry-run=server, an admission check by a CI
	// system) gets the answer a real creation would, but no pod follows:
	// it must not hold room that real pods then lack.
	dryRun := req.DryRun != nil && *req.DryRun

	var seenErr error
	tx := w.tracker.BeginPolicy(key, func(id string) bool {
		if w.useLedger() {
			// The node sums come from the ledger, which the informer's
			// handler updates after its index: a reservation must stand
			// until the ledger holds its pod, or the pod's room goes
			// uncounted in between.
			return w.ledger.Holds(id)
		}
		var pods corev1.PodList
		if err := w.reader.List(ctx, &pods, client.MatchingFields{IndexPlacementID: id}, client.UnsafeDisableDeepCopy); err != nil {
			seenErr = err
			return false
		}
		return len(pods.Items) > 0
	})
	defer tx.Done()
	if seenErr != nil {
		return admission.Response{}, fmt.Errorf("looking up placed pods: %w", seenErr)
	}
	names := rules.DisplayNames(rp)
	group := rules.GroupKey(rp, pod)
	for attempt := 1; ; attempt++ {
		inflight := tx.InFlight()
		states, unitNodes, listed, err := w.unitStates(ctx, tx, rp, pod, req0, group, inflight)
		if err != nil {
			return admission.Response{}, err
		}
		d := rules.Choose(&rp.Spec, states)
		if skippedForRoom(d) && rules.WaitsForTerminating(&rp.Spec) {
			// The pod would pass a full unit because the cache shows no
			// terminating pod there. A rollout deletes the old pod just
			// before it creates the new one, so the cache may not show that
			// deletion yet: ask the API server before spilling.
			if confirmed, err := w.terminatingLive(ctx, rp, pod, states); err != nil {
				return admission.Response{}, err
			} else if confirmed {
				d = rules.Choose(&rp.Spec, states)
			}
		}
		if d.Deny {
			w.metrics.Denied.WithLabelValues(rp.Namespace, rp.Name).Inc()
			msg := fmt.Sprintf("ResourcePolicy %s: %s", rp.Name, d.Explain(names))
			if !dryRun {
				w.recorder.Eventf(rp, nil, corev1.EventTypeWarning, "PodDenied", "Place", "refused a pod (generateName %q): %s", pod.GenerateName, d.Explain(names))
			}
			return admission.Denied(msg), nil
		}
		if !dryRun && w.shared != nil && d.Unit != rules.Outside && rules.Capped(&rp.Spec.Units[d.Unit]) {
			// The unit has a max and other replicas may be filling it:
			// decide again on the policy's shared reservations and
			// publish this one before answering.
			d = w.shared.reserve(ctx, rp, req, req0, group, states, inflight, listed)
			if d.Deny {
				w.metrics.Denied.WithLabelValues(rp.Namespace, rp.Name).Inc()
				w.recorder.Eventf(rp, nil, corev1.EventTypeWarning, "PodDenied", "Place", "refused a pod (generateName %q): %s", pod.GenerateName, d.Explain(names))
				return admission.Denied(fmt.Sprintf("ResourcePolicy %s: %s", rp.Name, d.Explain(names))), nil
			}
		}
		unit := rules.UnitLabel(rp, d.Unit)
		w.setPlacement(ctx, p, pod, rp, req, d, unit)
		resp, err := p.response("")
		if err != nil {
			w.metrics.Errors.WithLabelValues(reasonEncode).Inc()
			log.FromContext(ctx).Error(err, "encoding the placement patch; admitting the pod unchanged")
			return admission.Allowed("").WithWarnings("spillway could not encode its placement, so this pod was created without a unit"), nil
		}
		if !dryRun {
			r := rules.Reservation{ID: string(req.UID), Policy: key, Unit: unit, Node: d.Node, Requests: req0, Group: group}
			var nodes []string
			if d.Node != "" && d.Unit != rules.Outside {
				nodes = unitNodes[d.Unit]
			}
			if attempt < maxDecisions {
				if !tx.TryReserve(r, nodes) {
					continue
				}
			} else {
				tx.Reserve(r)
			}
			w.metrics.Placements.WithLabelValues(rp.Namespace, rp.Name, unit).Inc()
		}
		log.FromContext(ctx).V(1).Info("placed pod", "policy", rp.Name, "generateName", pod.GenerateName, "name", pod.Name,
			"dryRun", dryRun, "decision", d.Explain(names))
		return resp, nil
	}
}

// setPlacement records the placement in the patch: the policy and unit
// labels, the placement ID, the reserved node, the signature over them,
// and the unit's node affinity.
func (w *Webhook) setPlacement(ctx context.Context, p *podPatch, pod *corev1.Pod, rp *v1alpha1.ResourcePolicy, req admission.Request, d rules.Decision, unit string) {
	claim := rules.Claim{Namespace: pod.Namespace, PlacementID: string(req.UID), Node: d.Node, Policy: rp.Name, Unit: unit}
	labels := map[string]string{rules.LabelPolicy: rp.Name, rules.LabelUnit: unit}
	annotations := map[string]string{rules.AnnotationPlacementID: claim.PlacementID}
	if d.Unit != rules.Outside {
		// The unit's own marks first: the API keeps spillway.dev keys out
		// of them, and spillway's keys below win regardless.
		u := &rp.Spec.Units[d.Unit]
		labels = mergeMarks(u.PodLabels, labels)
		// The deletion cost the deletioncost controller would set: written
		// here, a burst's pods need no patch each once they exist.
		annotations[rules.AnnotationDeletionCost] = rules.FormatCost(rules.DeletionCost(len(rp.Spec.Units), d.Unit))
		annotations = mergeMarks(u.PodAnnotations, annotations)
	}
	if d.Node != "" {
		annotations[rules.AnnotationReservedNode] = d.Node
	}
	if sig, err := w.keys.Sign(claim); err == nil {
		annotations[rules.AnnotationSignature] = sig
	} else {
		// Placed all the same; without a signature the reserved node is
		// not charged, which only weakens the burst guard for this pod.
		w.metrics.Errors.WithLabelValues(reasonKey).Inc()
		log.FromContext(ctx).Error(err, "signing the placement")
	}
	p.set(labels, annotations)
	p.affinity = nil
	if d.Unit != rules.Outside {
		p.affinity = affinityOps(&pod.Spec, rp.Spec.Units[d.Unit].NodeSelector)
		if tol, ok := w.virtual.Toleration(); ok && rules.Kind(&rp.Spec.Units[d.Unit]) == rules.VirtualUnit {
			p.affinity = append(p.affinity, tolerationOps(&pod.Spec, tol)...)
		}
	}
}

// mergeMarks is marks with own on top.
func mergeMarks(marks, own map[string]string) map[string]string {
	if len(marks) == 0 {
		return own
	}
	out := make(map[string]string, len(marks)+len(own))
	for k, v := range marks {
		if !rules.Reserved(k) {
			out[k] = v
		}
	}
	for k, v := range own {
		out[k] = v
	}
	return out
}

// unitStates counts the policy's pods per unit (in-flight placements
// included) and, under LackResourceOrExceedMax, looks for room in every unit
// but the last. unitNodes[i] names the nodes whose room was looked at for
// unit i; listed holds the placement IDs of the pods counted from. group is
// the pod's GroupKey.
func (w *Webhook) unitStates(ctx context.Context, tx *rules.Txn, rp *v1alpha1.ResourcePolicy, pod *corev1.Pod, req corev1.ResourceList, group string, inflight []rules.Reservation) (states []rules.UnitState, unitNodes [][]string, listed map[string]bool, err error) {
	states = make([]rules.UnitState, len(rp.Spec.Units))
	unitNodes = make([][]string, len(rp.Spec.Units))
	pods, err := w.selectedPods(ctx, rp)
	if err != nil {
		return nil, nil, nil, err
	}
	listed = make(map[string]bool, len(pods))
	for _, p := range pods {
		if id := p.Annotations[rules.AnnotationPlacementID]; id != "" {
			listed[id] = true
		}
	}
	// With matchLabelKeys, max counts only the pods of the new pod's group.
	pods = rules.InGroup(rp, pods, pod)
	nodeOf, nodeErr := w.nodeLookup(ctx)
	counts, used := rules.Usage(rp, pods, nodeOf)
	if nodeErr() != nil {
		return nil, nil, nil, nodeErr()
	}
	for i, c := range counts {
		states[i].Count, states[i].Used = c, used[i]
	}
	key := rules.PolicyKey(rp)
	for _, r := range inflight {
		if r.Policy != key || r.Group != group {
			continue
		}
		if u, ok := rules.UnitIndex(rp, r.Unit); ok && u != rules.Outside {
			states[u].Count++
			if len(rp.Spec.Units[u].MaxResources) > 0 {
				states[u].Used = rules.AddRequests(states[u].Used, r.Requests)
			}
		}
	}
	for i := range rp.Spec.Units {
		states[i].OverMaxResources = rules.ExceedsMaxResources(&rp.Spec.Units[i], states[i].Used, req)
	}
	needRoom := rules.NeedsRoom(&rp.Spec)
	if rules.WaitsForTerminating(&rp.Spec) {
		// The nodes were read for the counts already (w.node caches them).
		for u, t := range rules.TerminatingUnits(rp, pods, nodeOf) {
			states[u].Terminating = t
		}
		if nodeErr() != nil {
			return nil, nil, nil, nodeErr()
		}
	}
	for i := range rp.Spec.Units {
		states[i].CoolingDown = tx.CoolingDown(rules.UnitKey{Policy: key, Unit: rules.UnitLabel(rp, i)}) ||
			rules.StatusCoolingDown(rp, i, w.clock.Now())
		if !needRoom || rules.Kind(&rp.Spec.Units[i]) != rules.FixedUnit {
			continue
		}
		preempts := rules.PreemptsBeforeNextUnit(&rp.Spec)
		usage, err := w.unitNodes(ctx, &rp.Spec.Units[i], preempts)
		if err != nil {
			return nil, nil, nil, err
		}
		if preempts {
			// The scheduler makes this room by preempting: the pod is
			// pinned to the unit and the victims' room is reserved for it.
			usage = rules.WithoutPreemptible(usage, pod)
		}
		for _, u := range usage {
			unitNodes[i] = append(unitNodes[i], u.Node.Name)
		}
		states[i].RoomNode, states[i].Room = rules.RoomNode(pod, req, usage, inflight)
	}
	return states, unitNodes, listed, nil
}

// skippedForRoom reports whether d passed a unit for lack of room.
func skippedForRoom(d rules.Decision) bool {
	for _, s := range d.Skipped {
		if s.Reason == rules.SkipNoRoom {
			return true
		}
	}
	return false
}

// terminatingLive reads the policy's pods from the API server rather than
// the cache and marks the units where some are terminating; it reports
// whether that marked a unit the cache had not. Without an API reader
// (unit tests) it reads nothing.
func (w *Webhook) terminatingLive(ctx context.Context, rp *v1alpha1.ResourcePolicy, pod *corev1.Pod, states []rules.UnitState) (bool, error) {
	if w.shared == nil {
		return false, nil
	}
	var pods corev1.PodList
	if err := w.shared.apiReader.List(ctx, &pods, client.InNamespace(rp.Namespace), client.MatchingLabels(rp.Spec.Selector)); err != nil {
		return false, fmt.Errorf("listing selected pods from the API server: %w", err)
	}
	nodeOf, nodeErr := w.nodeLookup(ctx)
	changed := false
	for u, t := range rules.TerminatingUnits(rp, rules.InGroup(rp, rules.Pointers(pods.Items), pod), nodeOf) {
		if t && !states[u].Terminating {
			states[u].Terminating, changed = true, true
		}
	}
	return changed, nodeErr()
}

// nodeLookup returns the node reader the placement rules take, which reads
// each node once per review (a missing node is nil), and a func returning
// the errors its reads met.
func (w *Webhook) nodeLookup(ctx context.Context) (nodeOf func(name string) *corev1.Node, errs func() error) {
	nodes := map[string]*corev1.Node{}
	var nodeErr error
	return func(name string) *corev1.Node {
		n, err := w.node(ctx, nodes, name)
		nodeErr = errors.Join(nodeErr, err)
		return n
	}, func() error { return nodeErr }
}

func (w *Webhook) node(ctx context.Context, cache map[string]*corev1.Node, name string) (*corev1.Node, error) {
	if n, ok := cache[name]; ok {
		return n, nil
	}
	if w.nodes != nil && w.storesReady() {
		obj, _, err := w.nodes.GetByKey(name)
		if err != nil {
			return nil, fmt.Errorf("reading node %s: %w", name, err)
		}
		n, _ := obj.(*corev1.Node) // nil when the node is not there
		cache[name] = n
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

// useLedger reports whether node room is read from the ledger.
func (w *Webhook) useLedger() bool {
	return w.ledger != nil && (w.ledgerSynced == nil || w.ledgerSynced()) && w.storesReady()
}

// storesReady reports whether the informers' stores may be read directly.
func (w *Webhook) storesReady() bool {
	return w.storesSynced == nil || w.storesSynced()
}

// unitNodes lists the unit's nodes with the pods charged to each: those
// bound or nominated there, and those waiting on a reservation there that
// spillway signed. From the ledger, the bound pods come summed (Taken);
// everyPod asks for each of them instead (preemption weighs them one by
// one).
func (w *Webhook) unitNodes(ctx context.Context, u *v1alpha1.Unit, everyPod bool) ([]rules.NodeUsage, error) {
	nodes, err := w.selectedNodes(ctx, u.NodeSelector)
	if err != nil {
		return nil, err
	}
	out := make([]rules.NodeUsage, 0, len(nodes))
	for _, n := range nodes {
		if w.useLedger() && !everyPod {
			taken, waiting := w.ledger.Node(n.Name)
			out = append(out, rules.NodeUsage{Node: n, Taken: taken, Pods: rules.Charged(waiting, w.keys.Signed)})
			continue
		}
		claims, err := w.podsOnNode(ctx, n.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, rules.NodeUsage{Node: n, Pods: rules.Charged(claims, w.keys.Signed)})
	}
	return out, nil
}

// The placement rules only read pods and nodes, and the informer replaces
// cached objects rather than changing them, so the reads below hand out the
// cache's own objects without copying: nothing may write to them.

// selectedNodes is the cached nodes with the given labels.
func (w *Webhook) selectedNodes(ctx context.Context, selector map[string]string) ([]*corev1.Node, error) {
	if w.nodes == nil || !w.storesReady() {
		var nodes corev1.NodeList
		if err := w.reader.List(ctx, &nodes, client.MatchingLabels(selector), client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing unit nodes: %w", err)
		}
		out := make([]*corev1.Node, len(nodes.Items))
		for i := range nodes.Items {
			out[i] = &nodes.Items[i]
		}
		return out, nil
	}
	sel := labels.SelectorFromSet(selector)
	var out []*corev1.Node
	for _, o := range w.nodes.List() {
		if n, ok := o.(*corev1.Node); ok && sel.Matches(labels.Set(n.Labels)) {
			out = append(out, n)
		}
	}
	return out, nil
}

// selectedPods is the cached pods the policy selects.
func (w *Webhook) selectedPods(ctx context.Context, rp *v1alpha1.ResourcePolicy) ([]*corev1.Pod, error) {
	if w.pods == nil || !w.storesReady() {
		var pods corev1.PodList
		if err := w.reader.List(ctx, &pods, client.InNamespace(rp.Namespace), client.MatchingLabels(rp.Spec.Selector), client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing selected pods: %w", err)
		}
		return rules.Pointers(pods.Items), nil
	}
	objs, err := w.pods.ByIndex(toolscache.NamespaceIndex, rp.Namespace)
	if err != nil {
		return nil, fmt.Errorf("reading the pods of namespace %s: %w", rp.Namespace, err)
	}
	sel := labels.SelectorFromSet(rp.Spec.Selector)
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out, nil
}

// podsOnNode is the cached pods that occupy the node (rules.OccupiedNode).
func (w *Webhook) podsOnNode(ctx context.Context, node string) ([]*corev1.Pod, error) {
	if w.pods == nil || !w.storesReady() {
		var pods corev1.PodList
		if err := w.reader.List(ctx, &pods, client.MatchingFields{IndexOccupiedNode: node}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing pods on node %s: %w", node, err)
		}
		return rules.Pointers(pods.Items), nil
	}
	objs, err := w.pods.ByIndex(IndexOccupiedNode, node)
	if err != nil {
		return nil, fmt.Errorf("reading the pods on node %s: %w", node, err)
	}
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// IndexOccupiedNodeFunc and IndexPlacementIDFunc compute the indexes;
// Register installs them on the manager's cache (the first as the pod
// informer's own index, see podIndex) and tests on a fake client.
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
