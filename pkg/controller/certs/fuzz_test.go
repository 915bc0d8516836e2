package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
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

	"github.com/spillway-dev/spillway/pkg/controller/certs"
)

var (
	fzNow   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fzHosts = []string{"spillway-controller.spillway-system.svc", "127.0.0.1"}
)

const (
	fzWebhook = "spillway-placement"
	fzSecret  = "spillway-webhook-cert"
	fzNS      = "spillway-system"
)

// fzChain is Secret data as another replica (or an operator, or an
// attacker with write access to the Secret) may have left it.
type fzChain struct {
	caCert, caKey, cert, key []byte
}

func fzKey(f *testing.F) (*ecdsa.PrivateKey, []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		f.Fatal(err)
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func fzSign(f *testing.F, tmpl, parent *x509.Certificate, pub, priv any) []byte {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		f.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// fzIssue writes a CA and a serving certificate for fzHosts, the serving
// one valid until certUntil.
func fzIssue(f *testing.F, certUntil time.Time) fzChain {
	caKey, caKeyPEM := fzKey(f)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz-ca"},
		NotBefore: fzNow.Add(-time.Hour), NotAfter: fzNow.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	caPEM := fzSign(f, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	b, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	key, keyPEM := fzKey(f)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: fzHosts[0]},
		NotBefore: fzNow.Add(-time.Hour), NotAfter: certUntil,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: fzHosts[:1], IPAddresses: []net.IP{net.ParseIP(fzHosts[1])},
	}
	return fzChain{caCert: caPEM, caKey: caKeyPEM, cert: fzSign(f, tmpl, ca, &key.PublicKey, caKey), key: keyPEM}
}

// FuzzSecret starts the certificate manager on a shared Secret whose data
// is fuzzed. Whatever the Secret holds, Ensure must end with a certificate
// served for the configured hosts that the CA bundle it published into the
// webhook configuration verifies: otherwise the API server cannot call the
// webhook, and every pod is admitted unplaced.
func FuzzSecret(f *testing.F) {
	a := fzIssue(f, fzNow.Add(365*24*time.Hour))
	b := fzIssue(f, fzNow.Add(365*24*time.Hour))
	// Serving certificate due for renewal under a CA that is not: renewed
	// with the stored CA key.
	due := fzIssue(f, fzNow.Add(24*time.Hour))
	bundle := func(c ...[]byte) []byte {
		var out []byte
		for _, p := range c {
			out = append(out, p...)
		}
		return out
	}
	f.Add(a.caCert, a.caKey, a.cert, a.key, []byte(nil))
	f.Add(a.caCert, a.caKey, a.cert, a.key, bundle(a.caCert, b.caCert))
	f.Add(due.caCert, due.caKey, due.cert, due.key, due.caCert)
	f.Add(a.caCert, a.caKey, b.cert, b.key, []byte(nil))
	f.Add(a.caCert, a.caKey, a.cert, b.key, []byte(nil))
	f.Add(a.caCert, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), a.cert, a.key, []byte(nil))
	f.Add([]byte(nil), []byte(nil), []byte(nil), []byte(nil), []byte(nil))
	f.Add([]byte("garbage"), a.caKey, a.cert, a.key, []byte("garbage"))
	// Fields that do not belong together (found by fuzzing): a CA key that is
	// not the CA's, a ca.crt whose first block is no CA, a bundle without the
	// CA, a junk bundle.
	f.Add(a.caCert, b.caKey, a.cert, a.key, a.caCert)
	f.Add(due.caCert, b.caKey, due.cert, due.key, due.caCert)
	f.Add(bundle(a.cert, a.caCert), a.caKey, bundle(a.cert, a.caCert), a.key, []byte(nil))
	f.Add(a.caCert, a.caKey, a.cert, a.key, b.caCert)
	f.Add(a.caCert, a.caKey, a.cert, a.key, []byte("junk"))

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, caCert, caKey, cert, key, caBundle []byte) {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: fzNS, Name: fzSecret},
			Type:       corev1.SecretTypeTLS,
			Data: map[string][]byte{
				certs.KeyCACert: caCert, certs.KeyCAKey: caKey, certs.KeyCert: cert, certs.KeyKey: key, certs.KeyCABundle: caBundle,
			},
		}
		hook := &admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: fzWebhook},
			Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "placement.spillway.dev"}},
		}
		clk := clocktesting.NewFakeClock(fzNow)
		c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(secret, hook).Build()
		m, err := certs.New(c, certs.Options{
			Name:            "spillway-controller",
			Targets:         []certs.Target{certs.WebhookConfiguration(fzWebhook)},
			SecretNamespace: fzNS, SecretName: fzSecret,
			Hosts:      fzHosts,
			CAValidity: 10 * 365 * 24 * time.Hour, CertValidity: 365 * 24 * time.Hour, RenewBefore: 30 * 24 * time.Hour,
			Interval: time.Minute,
		}, clk)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Ensure(context.Background()); err != nil {
			t.Fatalf("Ensure failed on a Secret it can replace: %v", err)
		}
		leaf := fzVerifyServed(t, m, c, fzNow)
		// The next renewal, under the CA the first Ensure kept, must work
		// as well: a stored chain is trusted for months.
		clk.SetTime(leaf.NotAfter.Add(-30*24*time.Hour + time.Hour))
		if err := m.Ensure(context.Background()); err != nil {
			t.Fatalf("renewal at %v failed: %v", clk.Now(), err)
		}
		if again := fzVerifyServed(t, m, c, clk.Now()); again.Equal(leaf) {
			t.Fatalf("certificate valid until %v not renewed at %v", leaf.NotAfter, clk.Now())
		}
	})
}

// fzVerifyServed asserts the served certificate verifies at now, for every
// host, against the bundle published into the webhook configuration, and
// returns it.
func fzVerifyServed(t *testing.T, m *certs.Manager, c client.Client, now time.Time) *x509.Certificate {
	t.Helper()
	served, err := m.GetCertificate(nil)
	if err != nil {
		t.Fatalf("nothing served after Ensure: %v", err)
	}
	leaf, err := x509.ParseCertificate(served.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	var got admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(context.Background(), client.ObjectKey{Name: fzWebhook}, &got); err != nil {
		t.Fatal(err)
	}
	published := got.Webhooks[0].ClientConfig.CABundle
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(published) {
		t.Fatalf("published CA bundle holds no certificate: %q", published)
	}
	for _, h := range fzHosts {
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots: roots, DNSName: h, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			t.Fatalf("at %v the served certificate does not verify for %s against the published bundle: %v", now, h, err)
		}
	}
	return leaf
}
