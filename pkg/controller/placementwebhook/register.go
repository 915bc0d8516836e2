package placementwebhook

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
	rules "github.com/spillway-dev/spillway/pkg/placement"
)

// Path is where the webhook is served; the MutatingWebhookConfiguration's
// clientConfig (service path or URL) must end in it.
const Path = "/spillway/v1/pods/placement"

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=spillway.dev,resources=resourcepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Register builds the webhook on mgr's cache and event recorder and adds
// it to mgr: the form the controller wiring list uses.
func Register(mgr manager.Manager, reg prometheus.Registerer, opts Options) error {
	w, err := New(mgr.GetCache(), admission.NewDecoder(mgr.GetScheme()), mgr.GetEventRecorder(EventSource), reg, opts)
	if err != nil {
		return err
	}
	return w.Register(mgr)
}

// Register installs the pod field indexes on the manager's cache, shares
// reservations through the API server, and serves the webhook on the
// manager's webhook server. The webhook server runs on every replica,
// leader or not.
func (w *Webhook) Register(mgr manager.Manager) error {
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, IndexPlacementID, IndexPlacementIDFunc); err != nil {
		return fmt.Errorf("indexing pods by placement id: %w", err)
	}
	// Start the informers with the cache rather than on the first request,
	// which would otherwise wait for a full pod list past its timeout.
	// Reviews read pods and nodes through the informers' own indexes
	// (podIndex, nodeStore).
	informer := func(obj client.Object) (cache.Informer, toolscache.Indexer, error) {
		inf, err := mgr.GetCache().GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return nil, nil, fmt.Errorf("starting the %T informer: %w", obj, err)
		}
		indexed, ok := inf.(interface{ GetIndexer() toolscache.Indexer })
		if !ok {
			return nil, nil, fmt.Errorf("the manager's %T informer (%T) has no index to read", obj, inf)
		}
		return inf, indexed.GetIndexer(), nil
	}
	if _, _, err := informer(&v1alpha1.ResourcePolicy{}); err != nil {
		return err
	}
	nodes, nodeIndex, err := informer(&corev1.Node{})
	if err != nil {
		return err
	}
	w.nodes = nodeIndex
	pods, podIndex, err := informer(&corev1.Pod{})
	if err != nil {
		return err
	}
	if err := pods.AddIndexers(podIndexers()); err != nil {
		return fmt.Errorf("indexing pods by node: %w", err)
	}
	w.pods = podIndex
	w.storesSynced = func() bool { return pods.HasSynced() && nodes.HasSynced() }
	w.ledger = rules.NewLedger()
	handler, err := pods.AddEventHandler(w.podEvents())
	if err != nil {
		return fmt.Errorf("watching pods for placed ones: %w", err)
	}
	// Until the handler has been handed every pod of the first list, the
	// ledger is short of pods: reviews add up each node's pods meanwhile.
	w.ledgerSynced = handler.HasSynced
	shared, err := reservationClient(mgr)
	if err != nil {
		return err
	}
	w.ShareReservations(shared, shared)
	var h http.Handler = &webhook.Admission{Handler: w}
	if w.auth != nil {
		h = w.auth.Require(h)
	}
	mgr.GetWebhookServer().Register(Path, h)
	return nil
}

// podEvents keeps the ledger's node sums and drops reservations: a
// reservation stands in for its pod only until the cache shows the pod (or
// its deletion). The ledger is updated first, so that the pod's room is
// counted before its reservation goes.
func (w *Webhook) podEvents() toolscache.ResourceEventHandlerFuncs {
	podOf := func(obj any) *corev1.Pod {
		if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		p, _ := obj.(*corev1.Pod)
		return p
	}
	release := func(p *corev1.Pod) {
		if p == nil {
			return
		}
		if id := p.Annotations[rules.AnnotationPlacementID]; id != "" {
			w.tracker.Release(id)
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			p := podOf(obj)
			w.ledger.Update(nil, p)
			release(p)
		},
		UpdateFunc: func(old, obj any) {
			p := podOf(obj)
			w.ledger.Update(podOf(old), p)
			release(p)
		},
		DeleteFunc: func(obj any) {
			p := podOf(obj)
			w.ledger.Update(p, nil)
			release(p)
		},
	}
}

// podIndexers are the indexes the webhook adds to the pod informer.
func podIndexers() toolscache.Indexers {
	return toolscache.Indexers{IndexOccupiedNode: func(obj any) ([]string, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return nil, nil
		}
		return IndexOccupiedNodeFunc(p), nil
	}}
}

// Client-side rate limit of the shared-reservation client: one read and
// one write per admission into a unit with a max, for bursts of a few
// hundred pods a second across replicas. The API server's own priority and
// fairness still applies.
const (
	reservationQPS   = 100
	reservationBurst = 200
)

// reservationClient is an uncached client with a rate limiter of its own.
// On the manager's client, the leader's reconcilers (deletion costs,
// status) share one token bucket with admission, and in a burst a review
// waited past its one-second bound for a token; it then treats every unit
// with a max as full, refusing pods that had room (measured in test/faults
// before this client existed).
func reservationClient(mgr manager.Manager) (client.Client, error) {
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.QPS, cfg.Burst, cfg.RateLimiter = reservationQPS, reservationBurst, nil
	c, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, fmt.Errorf("building the shared-reservation client: %w", err)
	}
	return c, nil
}
