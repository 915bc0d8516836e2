package security

// TLS everywhere (issue 12, item 7). The kube-apiserver verifies both of
// spillway's servers against a CA bundle spillway publishes: the placement
// webhook (the controller's CA, in the MutatingWebhookConfiguration) and the
// metrics adapter (its own CA, in the APIServices; no
// insecureSkipTLSVerify). A bundle that is removed, replaced or lost with a
// recreated object is a denial of service on placement or on every HPA
// that uses spillway's metrics, so each component watches its objects by
// name and restores the bundle within seconds, not at its next periodic
// check (10 minutes).

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

// tlsRestoreBound is how long a tampered bundle may stay broken. The
// periodic recheck comes every 10 minutes; a watch restores it in well
// under a second on an idle machine.
const tlsRestoreBound = 15 * time.Second

var (
	tlsAPIServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	// tlsAPIServices are the APIServices framework.ApplyAPIServices registers.
	tlsAPIServices = []string{"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io", "v1beta1.external.metrics.k8s.io"}
	// tlsAdapterHost is the name the kube-apiserver verifies the adapter's
	// certificate for: <service>.<namespace>.svc.
	tlsAdapterHost = framework.AdapterServiceName + "." + framework.SystemNamespace + ".svc"
)

// tlsRestored polls ok until it holds, fails the test if that takes longer
// than tlsRestoreBound, and logs and returns how long it took.
func tlsRestored(t *testing.T, what string, ok func(ctx context.Context) (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), tlsRestoreBound)
	defer cancel()
	last := ""
	if err := localcluster.Poll(ctx, 50*time.Millisecond, what, func(ctx context.Context) (bool, error) {
		done, msg := ok(ctx)
		if !done && ctx.Err() == nil { // a poll cut short by the deadline says nothing new
			last = msg
		}
		return done, nil
	}); err != nil {
		t.Fatalf("%s: not restored within %s (the periodic recheck is 10 minutes away): %s", what, tlsRestoreBound, last)
	}
	took := time.Since(start)
	t.Logf("%s: restored after %s", what, took.Round(time.Millisecond))
	return took
}

// tlsServedLeaf is the certificate a TLS server presents. It is read
// during the handshake, before any client certificate the server may
// require is sent, so it works whatever the server asks of clients.
func tlsServedLeaf(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	conn, err := tls.Dial("tcp", addr, &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // verified below against the published bundle, as the kube-apiserver does
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			leaf = c
			return err
		},
	})
	if err == nil {
		conn.Close()
	}
	if leaf == nil {
		t.Fatalf("no certificate from %s: %v", addr, err)
	}
	return leaf
}

// tlsVerify fails the test unless leaf chains to bundle for host.
func tlsVerify(t *testing.T, what string, leaf *x509.Certificate, bundle []byte, host string) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatalf("%s: the published CA bundle holds no certificate", what)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
		t.Fatalf("%s: the served certificate does not verify against the published bundle for %s: %v", what, host, err)
	}
}

// tlsForeignCA is a CA bundle nobody serves with: what a tenant who can
// write the object would put there.
func tlsForeignCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mallory-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestWebhookCABundleIsRestoredWithinSeconds(t *testing.T) {
	env := spillway(t)
	ctx := context.Background()
	mwcs := cluster.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	orig, err := mwcs.Get(ctx, framework.WebhookConfigName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := orig.Webhooks[0].ClientConfig.CABundle
	if len(bundle) == 0 {
		t.Fatal("the webhook configuration has no CA bundle")
	}
	webhookAddr := fmt.Sprintf("127.0.0.1:%d", env.WebhookPort)
	tlsVerify(t, "webhook", tlsServedLeaf(t, webhookAddr), bundle, "localhost")
	t.Cleanup(func() {
		// Leave a configuration behind whatever happened, for the other tests.
		if _, err := mwcs.Get(ctx, framework.WebhookConfigName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			_, _ = mwcs.Create(ctx, tlsFresh(orig), metav1.CreateOptions{})
		}
	})
	hasBundle := func(ctx context.Context) (bool, string) {
		cfg, err := mwcs.Get(ctx, framework.WebhookConfigName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, h := range cfg.Webhooks {
			if !bytes.Equal(h.ClientConfig.CABundle, bundle) {
				return false, fmt.Sprintf("webhook %s has a caBundle of %d bytes, not the controller's", h.Name, len(h.ClientConfig.CABundle))
			}
		}
		return true, ""
	}
	edit := func(set []byte) {
		t.Helper()
		cfg, err := mwcs.Get(ctx, framework.WebhookConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.CABundle = set
		}
		if _, err := mwcs.Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	var took []time.Duration
	edit(nil)
	took = append(took, tlsRestored(t, "caBundle emptied", hasBundle))
	edit(tlsForeignCA(t))
	took = append(took, tlsRestored(t, "caBundle replaced by another CA", hasBundle))

	if err := mwcs.Delete(ctx, framework.WebhookConfigName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := mwcs.Create(ctx, tlsFresh(orig), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	took = append(took, tlsRestored(t, "configuration deleted and recreated without a caBundle", hasBundle))
	t.Logf("webhook CA bundle restored after %v (bound %s)", took, tlsRestoreBound)

	// The restored bundle still verifies what the webhook serves.
	tlsVerify(t, "webhook after the restores", tlsServedLeaf(t, webhookAddr), bundle, "localhost")
}

// tlsFresh is the configuration as a client would create it anew: no
// server-set fields and no CA bundle.
func tlsFresh(orig *admissionregistrationv1.MutatingWebhookConfiguration) *admissionregistrationv1.MutatingWebhookConfiguration {
	cfg := orig.DeepCopy()
	cfg.ObjectMeta = metav1.ObjectMeta{Name: orig.Name, Labels: orig.Labels, Annotations: orig.Annotations}
	for i := range cfg.Webhooks {
		cfg.Webhooks[i].ClientConfig.CABundle = nil
	}
	return cfg
}

func TestAPIServicesVerifyTheAdapter(t *testing.T) {
	env := spillway(t)
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	apis := dyn.Resource(tlsAPIServiceGVR)
	adapterAddr := fmt.Sprintf("127.0.0.1:%d", env.AdapterPort)

	// verified reports whether an APIService has the adapter's bundle, does
	// not skip verification, and is Available (the aggregator reached the
	// adapter over TLS verified with that bundle).
	verified := func(name string, bundle []byte) func(ctx context.Context) (bool, string) {
		return func(ctx context.Context) (bool, string) {
			a, err := apis.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if skip, _, _ := unstructured.NestedBool(a.Object, "spec", "insecureSkipTLSVerify"); skip {
				return false, name + " skips TLS verification"
			}
			s, _, _ := unstructured.NestedString(a.Object, "spec", "caBundle")
			have, err := base64.StdEncoding.DecodeString(s)
			if err != nil || len(have) == 0 || (bundle != nil && !bytes.Equal(have, bundle)) {
				return false, fmt.Sprintf("%s has caBundle %.20q…, not the adapter's", name, s)
			}
			if ok, why := tlsAvailable(a); !ok {
				return false, name + " is not Available: " + why
			}
			return true, ""
		}
	}

	// Every APIService verifies the adapter with the same bundle.
	var bundle []byte
	for _, name := range tlsAPIServices {
		framework.Eventually(t, time.Minute, 200*time.Millisecond, name+" verified and Available", verified(name, bundle))
		a, err := apis.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, _, _ := unstructured.NestedString(a.Object, "spec", "caBundle")
		b, _ := base64.StdEncoding.DecodeString(s)
		if bundle == nil {
			bundle = b
		} else if !bytes.Equal(b, bundle) {
			t.Errorf("%s has another CA bundle than %s", name, tlsAPIServices[0])
		}
	}
	tlsVerify(t, "adapter", tlsServedLeaf(t, adapterAddr), bundle, tlsAdapterHost)

	// Verification switched off and the bundle dropped, as an older
	// install's manifest would apply them.
	const edited, recreated = "v1beta1.external.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"
	a, err := apis.Get(ctx, edited, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unstructured.RemoveNestedField(a.Object, "spec", "caBundle")
	if err := unstructured.SetNestedField(a.Object, true, "spec", "insecureSkipTLSVerify"); err != nil {
		t.Fatal(err)
	}
	if _, err := apis.Update(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	tookEdit := tlsRestored(t, edited+" switched to insecureSkipTLSVerify", verified(edited, bundle))

	// Deleted and recreated without a bundle.
	orig, err := apis.Get(ctx, recreated, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := apis.Get(ctx, recreated, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			_, _ = apis.Create(ctx, tlsFreshAPIService(orig), metav1.CreateOptions{})
		}
	})
	if err := apis.Delete(ctx, recreated, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tlsWaitGone(ctx, apis, recreated); err != nil {
		t.Fatal(err)
	}
	if _, err := apis.Create(ctx, tlsFreshAPIService(orig), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tookRecreate := tlsRestored(t, recreated+" deleted and recreated without a caBundle", verified(recreated, bundle))
	t.Logf("APIService CA bundle restored (and Available) after %s (edited) and %s (recreated), bound %s",
		tookEdit.Round(time.Millisecond), tookRecreate.Round(time.Millisecond), tlsRestoreBound)
}

// tlsAvailable reports an APIService's Available condition, and why.
func tlsAvailable(a *unstructured.Unstructured) (bool, string) {
	conds, _, _ := unstructured.NestedSlice(a.Object, "status", "conditions")
	for _, c := range conds {
		c, _ := c.(map[string]any)
		if c["type"] == "Available" {
			return c["status"] == "True", fmt.Sprintf("%v: %v", c["reason"], c["message"])
		}
	}
	return false, "no Available condition yet"
}

// tlsFreshAPIService is the APIService as created anew, without a bundle.
func tlsFreshAPIService(orig *unstructured.Unstructured) *unstructured.Unstructured {
	spec, _, _ := unstructured.NestedMap(orig.Object, "spec")
	delete(spec, "caBundle")
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion(orig.GetAPIVersion())
	u.SetKind(orig.GetKind())
	u.SetName(orig.GetName())
	u.SetLabels(orig.GetLabels())
	return u
}

// tlsWaitGone waits until a deleted object is gone from the API.
func tlsWaitGone(ctx context.Context, r dynamic.NamespaceableResourceInterface, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return localcluster.Poll(ctx, 100*time.Millisecond, name+" to be gone", func(ctx context.Context) (bool, error) {
		_, err := r.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
}
