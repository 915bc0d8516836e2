package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func opts(secret string) Options {
	return Options{
		WebhookConfigName: "spillway-placement",
		SecretNamespace:   "spillway-system", SecretName: secret,
		Hosts:      []string{"spillway-controller.spillway-system.svc", "localhost", "127.0.0.1"},
		CAValidity: 10 * 365 * 24 * time.Hour, CertValidity: 365 * 24 * time.Hour, RenewBefore: 30 * 24 * time.Hour,
		Interval: time.Minute,
	}
}

func webhookConfig() *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "spillway-placement"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "placement.spillway.dev"}},
	}
}

func newClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
}

// verify checks the served certificate chains to the bundle for every host.
func verify(t *testing.T, m *Manager, now time.Time, hosts ...string) {
	t.Helper()
	pair, err := m.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(m.CABundle()) {
		t.Fatal("empty CA bundle")
	}
	for _, h := range hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: roots, CurrentTime: now}); err != nil {
			t.Errorf("host %s: %v", h, err)
		}
	}
}

func bundleOf(t *testing.T, c client.Client) []byte {
	t.Helper()
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "spillway-placement"}, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Webhooks[0].ClientConfig.CABundle
}

func TestInMemory(t *testing.T) {
	c := newClient(t, webhookConfig())
	clk := clocktesting.NewFakeClock(t0)
	m, err := New(c, opts(""), clk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetCertificate(nil); err == nil {
		t.Error("no certificate may be served before Ensure")
	}
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	verify(t, m, t0, "localhost", "127.0.0.1", "spillway-controller.spillway-system.svc")
	if !bytes.Equal(bundleOf(t, c), m.CABundle()) {
		t.Error("the webhook configuration must carry the CA bundle")
	}
	var secrets corev1.SecretList
	if err := c.List(context.Background(), &secrets); err != nil || len(secrets.Items) != 0 {
		t.Errorf("in-memory mode wrote secrets: %v %v", secrets.Items, err)
	}
}

func TestSharedSecret(t *testing.T) {
	c := newClient(t, webhookConfig())
	clk := clocktesting.NewFakeClock(t0)
	a, _ := New(c, opts("spillway-webhook-cert"), clk)
	b, _ := New(c, opts("spillway-webhook-cert"), clk)
	for _, m := range []*Manager{a, b} {
		if err := m.Ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ca, _ := a.GetCertificate(nil)
	cb, _ := b.GetCertificate(nil)
	if !bytes.Equal(ca.Certificate[0], cb.Certificate[0]) {
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

func TestRenewal(t *testing.T) {
	c := newClient(t, webhookConfig())
	clk := clocktesting.NewFakeClock(t0)
	m, _ := New(c, opts("spillway-webhook-cert"), clk)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	first, _ := m.GetCertificate(nil)
	firstBundle := m.CABundle()

	// Still far from expiry: nothing changes.
	clk.Step(24 * time.Hour)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if same, _ := m.GetCertificate(nil); !bytes.Equal(same.Certificate[0], first.Certificate[0]) {
		t.Error("renewed too early")
	}

	// Inside the renewal window of the serving certificate: new leaf, same CA.
	clk.Step(340 * 24 * time.Hour)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	second, _ := m.GetCertificate(nil)
	if bytes.Equal(second.Certificate[0], first.Certificate[0]) {
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
	if !bytes.Equal(bundleOf(t, c), m.CABundle()) {
		t.Error("the new bundle must be published")
	}
}

func TestHostsChangeReissues(t *testing.T) {
	c := newClient(t)
	clk := clocktesting.NewFakeClock(t0)
	a, _ := New(c, opts("cert"), clk)
	if err := a.Ensure(context.Background()); err != nil {
		t.Fatal(err) // a missing webhook configuration is not an error
	}
	o := opts("cert")
	o.Hosts = append(o.Hosts, "spillway.example.com")
	b, _ := New(c, o, clk)
	if err := b.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	verify(t, b, t0, "spillway.example.com")
	if !bytes.Equal(a.CABundle(), b.CABundle()) {
		t.Error("a host change keeps the CA")
	}
}

func TestCorruptSecretReplaced(t *testing.T) {
	c := newClient(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "spillway-system", Name: "cert"},
		Data:       map[string][]byte{KeyCACert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})},
	})
	m, _ := New(c, opts("cert"), clocktesting.NewFakeClock(t0))
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	verify(t, m, t0, "localhost")
}

func TestValidate(t *testing.T) {
	o := opts("cert")
	o.WebhookConfigName, o.SecretNamespace, o.Hosts, o.RenewBefore = "", "", nil, 0
	err := o.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"MutatingWebhookConfiguration", "namespace", "host", "renew-before"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}
