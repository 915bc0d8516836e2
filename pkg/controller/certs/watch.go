package certs

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// watchTarget runs, until ctx ends, an informer on the one object t names
// and signals changed whenever that object is created, edited or deleted
// (and once when the informer first lists it), so a tampered or recreated
// object gets its bundle back within seconds.
//
// The list and watch carry the field selector metadata.name=<name>: the API
// server then authorizes them as requests for that one name, so RBAC can
// grant list/watch with resourceNames instead of on every object of the kind.
func (m *Manager) watchTarget(ctx context.Context, t Target, changed chan<- struct{}) {
	sel := fields.OneTermEqualSelector("metadata.name", t.Name())
	listGVK := t.GroupVersionKind()
	listGVK.Kind += "List"
	opts := func(o metav1.ListOptions) *client.ListOptions {
		o.FieldSelector = sel.String()
		return &client.ListOptions{FieldSelector: sel, Raw: &o}
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(listGVK)
			return list, m.client.List(ctx, list, opts(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(listGVK)
			return m.client.Watch(ctx, list, opts(o))
		},
	}
	signal := func(obj any) {
		if o, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = o.Obj
		}
		// A client that ignores the field selector (a fake) sends every
		// object of the kind.
		if o, ok := obj.(client.Object); ok && o.GetName() != t.Name() {
			return
		}
		select {
		case changed <- struct{}{}:
		default: // a signal is already pending
		}
	}
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		// A plain LIST then WATCH: one object needs no streamed initial list.
		ListerWatcher: listThenWatch{lw},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    signal,
			UpdateFunc: func(_, obj any) { signal(obj) },
			DeleteFunc: signal,
		},
	})
	go informer.RunWithContext(ctx)
}

// listThenWatch tells the reflector not to use watch-list semantics.
type listThenWatch struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported is read by client-go's reflector.
func (listThenWatch) IsWatchListSemanticsUnSupported() bool { return true }
