package certs

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// A Target is one cluster-scoped object that carries the CA bundle clients
// use to verify the chain: the API server reads a webhook's or an
// APIService's caBundle before it calls the server behind it.
//
// Targets are read and written as unstructured objects so that fields newer
// than this binary's client library survive the update.
type Target interface {
	// GroupVersionKind of the object.
	GroupVersionKind() schema.GroupVersionKind
	// Name of the object (cluster-scoped).
	Name() string
	// Inject writes bundle into obj and reports whether anything changed.
	Inject(obj *unstructured.Unstructured, bundle []byte) (changed bool, err error)
}

// WebhookConfiguration is a MutatingWebhookConfiguration: every webhook in
// it gets the bundle.
type WebhookConfiguration string

var mutatingWebhookConfigurationGVK = schema.GroupVersionKind{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "MutatingWebhookConfiguration"}

// GroupVersionKind implements Target.
func (WebhookConfiguration) GroupVersionKind() schema.GroupVersionKind {
	return mutatingWebhookConfigurationGVK
}

// Name implements Target.
func (w WebhookConfiguration) Name() string { return string(w) }

// Inject implements Target.
func (WebhookConfiguration) Inject(obj *unstructured.Unstructured, bundle []byte) (bool, error) {
	hooks, found, err := unstructured.NestedSlice(obj.Object, "webhooks")
	if err != nil {
		return false, err
	}
	if !found {
		return false, nil
	}
	changed := false
	for i, h := range hooks {
		hook, ok := h.(map[string]any)
		if !ok {
			return false, fmt.Errorf("webhooks[%d] is not an object", i)
		}
		same, err := hasBundle(hook, bundle, "clientConfig", "caBundle")
		if err != nil {
			return false, fmt.Errorf("webhooks[%d]: %w", i, err)
		}
		if same {
			continue
		}
		if err := unstructured.SetNestedField(hook, encode(bundle), "clientConfig", "caBundle"); err != nil {
			return false, err
		}
		hooks[i] = hook
		changed = true
	}
	if !changed {
		return false, nil
	}
	return true, unstructured.SetNestedSlice(obj.Object, hooks, "webhooks")
}

// APIService is an apiregistration.k8s.io/v1 APIService. Injecting the
// bundle also turns insecureSkipTLSVerify off: the API server rejects an
// APIService that has both, and a bundle is only written to be verified
// against.
type APIService string

var apiServiceGVK = schema.GroupVersionKind{Group: "apiregistration.k8s.io", Version: "v1", Kind: "APIService"}

// GroupVersionKind implements Target.
func (APIService) GroupVersionKind() schema.GroupVersionKind { return apiServiceGVK }

// Name implements Target.
func (a APIService) Name() string { return string(a) }

// Inject implements Target.
func (APIService) Inject(obj *unstructured.Unstructured, bundle []byte) (bool, error) {
	if _, found, _ := unstructured.NestedFieldNoCopy(obj.Object, "spec", "service"); !found {
		// A local APIService (served by kube-apiserver itself) has no
		// server of ours behind it; never touch it.
		return false, errors.New("has no spec.service: not an aggregated API server's")
	}
	changed := false
	same, err := hasBundle(obj.Object, bundle, "spec", "caBundle")
	if err != nil {
		return false, err
	}
	if !same {
		if err := unstructured.SetNestedField(obj.Object, encode(bundle), "spec", "caBundle"); err != nil {
			return false, err
		}
		changed = true
	}
	if skip, _, _ := unstructured.NestedBool(obj.Object, "spec", "insecureSkipTLSVerify"); skip {
		unstructured.RemoveNestedField(obj.Object, "spec", "insecureSkipTLSVerify")
		changed = true
	}
	return changed, nil
}

// hasBundle reports whether the base64 caBundle at path equals bundle.
func hasBundle(obj map[string]any, bundle []byte, path ...string) (bool, error) {
	s, _, err := unstructured.NestedString(obj, path...)
	if err != nil {
		return false, err
	}
	// Garbage that is not base64 is simply not the bundle: overwrite it.
	have, decodeErr := base64.StdEncoding.DecodeString(s)
	return decodeErr == nil && bytes.Equal(have, bundle), nil
}

// encode is how a []byte field is written in JSON (and so in unstructured).
func encode(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// targetString names a target in logs and errors.
func targetString(t Target) string { return t.GroupVersionKind().Kind + " " + t.Name() }
