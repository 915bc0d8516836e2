package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	webhookName = "spillway-placement"
	apiName     = "v1beta2.custom.metrics.k8s.io"
)

func opts(secret string) Options {
	return Options{
		Name:            "spillway-controller",
		Targets:         []Target{WebhookConfiguration(webhookName)},
		SecretNamespace: "spillway-system", SecretName: secret,
		Hosts:      []string{"spillway-controller.spillway-system.svc", "localhost", "127.0.0.1"},
		CAValidity: 10 * 365 * 24 * time.Hour, CertValidity: 365 * 24 * time.Hour, RenewBefore: 30 * 24 * time.Hour,
		Interval: time.Minute,
	}
}

func webhookConfig() *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: webhookName},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "placement.spillway.dev"}, {Name: "second.spillway.dev"}},
	}
}

func apiService(name string, insecure bool) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"group": "custom.metrics.k8s.io", "version": "v1beta2",
			"service":              map[string]any{"namespace": "spillway-system", "name": "spillway-metrics-adapter"},
			"groupPriorityMinimum": int64(100), "versionPriority": int64(200),
		},
	}}
	if insecure {
		u.Object["spec"].(map[string]any)["insecureSkipTLSVerify"] = true
	}
	u.SetGroupVersionKind(apiServiceGVK)
	u.SetName(name)
	return u
}

func byName(o client.Object) []string { return []string{o.GetName()} }

func newClient(t *testing.T, funcs *interceptor.Funcs, objs ...client.Object) client.WithWatch {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	api := &unstructured.Unstructured{}
	api.SetGroupVersionKind(apiServiceGVK)
	b := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).
		WithIndex(&admissionregistrationv1.MutatingWebhookConfiguration{}, "metadata.name", byName).
		WithIndex(api, "metadata.name", byName)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return b.Build()
}

func newManager(t *testing.T, c client.WithWatch, o Options, clk *clocktesting.FakeClock) *Manager {
	t.Helper()
	m, err := New(c, o, clk)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// served is the leaf being served.
func served(t *testing.T, m *Manager) *x509.Certificate {
	t.Helper()
	pair, err := m.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// verify checks the served certificate chains to the bundle for every host.
func verify(t *testing.T, m *Manager, now time.Time, hosts ...string) {
	t.Helper()
	verifyWith(t, served(t, m), m.CABundle(), now, hosts...)
}

func verifyWith(t *testing.T, leaf *x509.Certificate, bundle []byte, now time.Time, hosts ...string) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("empty CA bundle")
	}
	for _, h := range hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: roots, CurrentTime: now}); err != nil {
			t.Errorf("host %s: %v", h, err)
		}
	}
}

// webhookBundles are the caBundles of every webhook in the configuration.
func webhookBundles(t *testing.T, c client.Client) [][]byte {
	t.Helper()
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: webhookName}, cfg); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, h := range cfg.Webhooks {
		out = append(out, h.ClientConfig.CABundle)
	}
	return out
}

func webhookHasBundle(t *testing.T, c client.Client, bundle []byte) bool {
	t.Helper()
	for _, b := range webhookBundles(t, c) {
		if !bytes.Equal(b, bundle) {
			return false
		}
	}
	return true
}

func TestInMemory(t *testing.T) {
	c := newClient(t, nil, webhookConfig())
	m := newManager(t, c, opts(""), clocktesting.NewFakeClock(t0))
	if _, err := m.GetCertificate(nil); err == nil {
		t.Error("no certificate may be served before Ensure")
	}
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	verify(t, m, t0, "localhost", "127.0.0.1", "spillway-controller.spillway-system.svc")
	if !webhookHasBundle(t, c, m.CABundle()) {
		t.Error("every webhook of the configuration must carry the CA bundle")
	}
	var secrets corev1.SecretList
	if err := c.List(context.Background(), &secrets); err != nil || len(secrets.Items) != 0 {
		t.Errorf("in-memory mode wrote secrets: %v %v", secrets.Items, err)
	}
}

func TestSharedSecret(t *testing.T) {
	c := newClient(t, nil, webhookConfig())
	clk := clocktesting.NewFakeClock(t0)
	a := newManager(t, c, opts("spillway-webhook-cert"), clk)
	b := newManager(t, c, opts("spillway-webhook-cert"), clk)
	for _, m := range []*Manager{a, b} {
		if err := m.Ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if !served(t, a).Equal(served(t, b)) {
		t.Error("replicas must serve the same certificate")
	}
	verify(t, b, t0, "localhost")
	secret := &corev1.Secret{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "spillway-system", Name: "spillway-webhook-cert"}, secret); err != nil {
		t.Fatal(err)
	}
	if secret.Type != corev1.SecretTypeTLS || len(secret.Data[KeyCAKey]) == 0 {
		t.Errorf("secret = %v", secret.Type)
	}
}

// Two replicas start at once: both find no Secret, both create one; the
// loser reads the winner's chain instead of failing or overwriting it.
func TestCreationRace(t *testing.T) {
	var (
		raced bool
		b     *Manager
	)
	funcs := &interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		if _, ok := obj.(*corev1.Secret); ok && !raced {
			// Replica b creates its Secret between a's read and a's create.
			raced = true
			if err := b.Ensure(ctx); err != nil {
				return err
			}
		}
		return c.Create(ctx, obj, opts...)
	}}
	c := newClient(t, funcs, webhookConfig())
	clk := clocktesting.NewFakeClock(t0)
	a := newManager(t, c, opts("cert"), clk)
	b = newManager(t, c, opts("cert"), clk)
	if err := a.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !served(t, a).Equal(served(t, b)) {
		t.Error("after a creation race both replicas must serve the winner's certificate")
	}
	if !webhookHasBundle(t, c, a.CABundle()) {
		t.Error("the published bundle is not the winner's")
	}
}

func TestRenewal(t *testing.T) {
	c := newClient(t, nil, webhookConfig())
	clk := clocktesting.NewFakeClock(t0)
	m := newManager(t, c, opts("spillway-webhook-cert"), clk)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := served(t, m)
	firstBundle := m.CABundle()

	// Still far from expiry: nothing changes.
	clk.Step(24 * time.Hour)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !served(t, m).Equal(first) {
		t.Error("renewed too early")
	}

	// Inside the renewal window of the serving certificate: new leaf, same CA.
	clk.Step(340 * 24 * time.Hour)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if served(t, m).Equal(first) {
		t.Error("serving certificate not renewed")
	}
	if !bytes.Equal(m.CABundle(), firstBundle) {
		t.Error("the CA must stay while it is valid")
	}
	verify(t, m, clk.Now(), "localhost")

	// Inside the CA's renewal window: a new CA, bundle keeps the old one.
	clk.Step((9*365 + 10) * 24 * time.Hour) // 14 days before the CA expires
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(m.CABundle(), []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Errorf("bundle holds %d CAs, want the new and the old", n)
	}
	verify(t, m, clk.Now(), "localhost")
	if !webhookHasBundle(t, c, m.CABundle()) {
		t.Error("the new bundle must be published")
	}
}

// rotationOpts are lifetimes short enough to reach a CA rotation in a few
// clock steps.
func rotationOpts(secret string, targets ...Target) Options {
	o := opts(secret)
	o.Targets = targets
	o.CAValidity, o.CertValidity, o.RenewBefore = 3*time.Hour, 2*time.Hour+50*time.Minute, time.Hour
	return o
}

// At a CA rotation the bundle holding the new CA must reach every target
// while the old CA's certificate is still served, and the new certificate
// is served only after that.
func TestCARotationPublishesBeforeServing(t *testing.T) {
	for _, secret := range []string{"", "cert"} {
		t.Run("secret="+secret, func(t *testing.T) {
			var (
				m      *Manager
				writes []string // what was served when each target was written
			)
			funcs := &interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				if u, ok := obj.(*unstructured.Unstructured); ok && m.cert.Load() != nil {
					writes = append(writes, u.GetKind()+" while serving "+served(t, m).Issuer.CommonName)
				}
				return c.Update(ctx, obj, opts...)
			}}
			c := newClient(t, funcs, webhookConfig(), apiService(apiName, false))
			clk := clocktesting.NewFakeClock(t0)
			m = newManager(t, c, rotationOpts(secret, WebhookConfiguration(webhookName), APIService(apiName)), clk)
			if err := m.Ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			oldLeaf, oldBundle := served(t, m), m.CABundle()
			oldCA := oldLeaf.Issuer.CommonName

			// The CA is inside its renewal window; the old leaf is still valid.
			clk.Step(2*time.Hour + 5*time.Minute)
			writes = nil
			if err := m.Ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			newLeaf := served(t, m)
			if newLeaf.Issuer.CommonName == oldCA {
				t.Fatalf("no CA rotation: still issued by %s", oldCA)
			}
			want := []string{"MutatingWebhookConfiguration while serving " + oldCA, "APIService while serving " + oldCA}
			if fmt.Sprint(writes) != fmt.Sprint(want) {
				t.Errorf("bundle writes %q, want %q (published before the new certificate is served)", writes, want)
			}
			bundle := m.CABundle()
			if !bytes.Contains(bundle, oldBundle) || bytes.Count(bundle, []byte("BEGIN CERTIFICATE")) != 2 {
				t.Error("during the overlap the bundle must hold the old and the new CA")
			}
			// A client holding the published bundle verifies both certificates.
			verifyWith(t, oldLeaf, webhookBundles(t, c)[0], clk.Now(), "localhost")
			verifyWith(t, newLeaf, webhookBundles(t, c)[0], clk.Now(), "localhost")
		})
	}
}

// If the new bundle cannot be published, the certificate of the new CA is
// not served: the old one stays until a retry succeeds.
func TestCARotationWaitsForThePublishedBundle(t *testing.T) {
	for _, secret := range []string{"", "cert"} {
		t.Run("secret="+secret, func(t *testing.T) {
			var failing bool
			funcs := &interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				if _, ok := obj.(*unstructured.Unstructured); ok && failing {
					return errors.New("the API server is unavailable")
				}
				return c.Update(ctx, obj, opts...)
			}}
			c := newClient(t, funcs, webhookConfig())
			clk := clocktesting.NewFakeClock(t0)
			m := newManager(t, c, rotationOpts(secret, WebhookConfiguration(webhookName)), clk)
			if err := m.Ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			oldLeaf := served(t, m)

			// A leaf renewal under the same CA needs no new trust: served
			// even while publishing fails.
			clk.Step(time.Hour + 55*time.Minute)
			failing = true
			if err := m.Ensure(context.Background()); err != nil {
				t.Fatalf("renewing the leaf under the same CA: %v", err)
			}
			renewed := served(t, m)
			if renewed.Equal(oldLeaf) || renewed.Issuer.CommonName != oldLeaf.Issuer.CommonName {
				t.Fatal("the leaf was not renewed under the same CA")
			}

			clk.Step(10 * time.Minute) // the CA is inside its renewal window
			if err := m.Ensure(context.Background()); err == nil {
				t.Fatal("Ensure hid a failed publish")
			}
			if !served(t, m).Equal(renewed) {
				t.Fatal("a certificate of the new CA is served before its bundle is published")
			}
			failing = false
			if err := m.Ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			if served(t, m).Issuer.CommonName == oldLeaf.Issuer.CommonName {
				t.Error("the new CA's certificate is not served once its bundle is published")
			}
			verifyWith(t, served(t, m), webhookBundles(t, c)[0], clk.Now(), "localhost")
		})
	}
}

func TestHostsChangeReissues(t *testing.T) {
	c := newClient(t, nil)
	clk := clocktesting.NewFakeClock(t0)
	a := newManager(t, c, opts("cert"), clk)
	if err := a.Ensure(context.Background()); err != nil {
		t.Fatal(err) // a missing webhook configuration is not an error
	}
	o := opts("cert")
	o.Hosts = append(o.Hosts, "spillway.example.com")
	b := newManager(t, c, o, clk)
	if err := b.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	verify(t, b, t0, "spillway.example.com")
	if !bytes.Equal(a.CABundle(), b.CABundle()) {
		t.Error("a host change keeps the CA")
	}
}

func TestCorruptSecretReplaced(t *testing.T) {
	c := newClient(t, nil, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "spillway-system", Name: "cert"},
		Data:       map[string][]byte{KeyCACert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})},
	})
	m := newManager(t, c, opts("cert"), clocktesting.NewFakeClock(t0))
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	verify(t, m, t0, "localhost")
}

func TestInject(t *testing.T) {
	bundle := []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
	local := apiService("v1.apps", false)
	unstructured.RemoveNestedField(local.Object, "spec", "service")
	webhook := func(caBundle string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"webhooks": []any{
			map[string]any{"name": "a", "clientConfig": map[string]any{"caBundle": encode(bundle)}},
			map[string]any{"name": "b", "clientConfig": map[string]any{"caBundle": caBundle}},
		}}}
		u.SetGroupVersionKind(mutatingWebhookConfigurationGVK)
		return u
	}
	withBundle := func(u *unstructured.Unstructured) *unstructured.Unstructured {
		_ = unstructured.SetNestedField(u.Object, encode(bundle), "spec", "caBundle")
		return u
	}
	tests := []struct {
		name        string
		target      Target
		obj         *unstructured.Unstructured
		wantChanged bool
		wantErr     string
	}{
		{"apiservice without a bundle", APIService(apiName), apiService(apiName, false), true, ""},
		{"apiservice skipping verification", APIService(apiName), withBundle(apiService(apiName, true)), true, ""},
		{"apiservice already right", APIService(apiName), withBundle(apiService(apiName, false)), false, ""},
		{"local apiservice is never touched", APIService("v1.apps"), local, false, "no spec.service"},
		{"webhook with a garbage bundle", WebhookConfiguration(webhookName), webhook("!!not base64"), true, ""},
		{"webhook with another CA", WebhookConfiguration(webhookName), webhook(encode([]byte("other"))), true, ""},
		{"webhook already right", WebhookConfiguration(webhookName), webhook(encode(bundle)), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed, err := tt.target.Inject(tt.obj, bundle)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if skip, _, _ := unstructured.NestedBool(tt.obj.Object, "spec", "insecureSkipTLSVerify"); skip {
				t.Error("insecureSkipTLSVerify left on beside a bundle")
			}
			if again, _ := tt.target.Inject(tt.obj, bundle); again {
				t.Error("a second Inject still changed something")
			}
		})
	}
}

// recorder remembers the field selectors of list and watch requests.
type recorder struct {
	mu        sync.Mutex
	selectors map[string]bool
}

func (r *recorder) funcs() *interceptor.Funcs {
	record := func(opts []client.ListOption) {
		var o client.ListOptions
		o.ApplyOptions(opts)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.selectors[o.AsListOptions().FieldSelector] = true
	}
	return &interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			record(opts)
			return c.List(ctx, list, opts...)
		},
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			record(opts)
			return c.Watch(ctx, list, opts...)
		},
	}
}

// Start watches the targets: a bundle that is removed or edited, or lost
// with a deleted and recreated object, comes back without waiting for the
// recheck interval (the fake clock never reaches it here).
func TestStartRestoresTamperedTargets(t *testing.T) {
	rec := &recorder{selectors: map[string]bool{}}
	c := newClient(t, rec.funcs(), webhookConfig(), apiService(apiName, false))
	o := opts("cert")
	o.Targets = append(o.Targets, APIService(apiName))
	o.Interval = time.Hour
	m := newManager(t, c, o, clocktesting.NewFakeClock(t0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	bundle := m.CABundle()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Start(ctx)
	}()
	defer func() { cancel(); <-done }()

	restored := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the CA bundle was not restored", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	apiBundle := func() []byte {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(apiServiceGVK)
		if err := c.Get(ctx, client.ObjectKey{Name: apiName}, u); err != nil {
			return nil
		}
		if skip, _, _ := unstructured.NestedBool(u.Object, "spec", "insecureSkipTLSVerify"); skip {
			return nil
		}
		s, _, _ := unstructured.NestedString(u.Object, "spec", "caBundle")
		return []byte(s)
	}

	// Edited: one webhook's bundle emptied, the other's replaced.
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: webhookName}, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Webhooks[0].ClientConfig.CABundle = nil
	cfg.Webhooks[1].ClientConfig.CABundle = []byte("mallory's CA")
	if err := c.Update(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	restored("edited webhook configuration", func() bool { return webhookHasBundle(t, c, bundle) })

	// Deleted and recreated without a bundle.
	if err := c.Delete(ctx, webhookConfig()); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, webhookConfig()); err != nil {
		t.Fatal(err)
	}
	restored("recreated webhook configuration", func() bool { return webhookHasBundle(t, c, bundle) })

	// An APIService recreated with verification switched off.
	if err := c.Delete(ctx, apiService(apiName, false)); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, apiService(apiName, true)); err != nil {
		t.Fatal(err)
	}
	want := encode(bundle)
	restored("recreated APIService", func() bool { return string(apiBundle()) == want })

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for sel := range rec.selectors {
		if sel != "metadata.name="+webhookName && sel != "metadata.name="+apiName {
			t.Errorf("a list or watch with field selector %q: RBAC allows only the named objects", sel)
		}
	}
	if len(rec.selectors) != 2 {
		t.Errorf("field selectors %v, want one per target", rec.selectors)
	}
}

func TestValidate(t *testing.T) {
	o := opts("cert")
	o.Name, o.SecretNamespace, o.Hosts, o.RenewBefore = "", "", nil, 0
	o.Targets = []Target{APIService(""), WebhookConfiguration("a"), WebhookConfiguration("a")}
	err := o.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"name", "APIService target has an empty name", "MutatingWebhookConfiguration a is listed twice", "namespace", "host", "renew-before"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}
