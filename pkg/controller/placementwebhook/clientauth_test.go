package placementwebhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/spillway-dev/spillway/internal/localcluster"
)

// testCA is a CA that issues client certificates for the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a TLS certificate for cn with the given extended key usage.
func (ca *testCA) issue(t *testing.T, cn string, dns []string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writeFile(t *testing.T, path string, b []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestClientAuth(t *testing.T) {
	apiserverCA, otherCA := newTestCA(t, "webhook-client-ca"), newTestCA(t, "other-ca")
	caFile := filepath.Join(t.TempDir(), "client-ca.crt")
	writeFile(t, caFile, apiserverCA.pem, time.Unix(1000, 0))
	auth, err := NewClientAuth(caFile, []string{"kube-apiserver"}, 0, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(auth.Require(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	auth.Configure(srv.TLS)
	srv.StartTLS()
	defer srv.Close()

	call := func(certs ...tls.Certificate) error {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, Certificates: certs}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Post(srv.URL, "application/json", nil)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
	cases := []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"the API server's client certificate", []tls.Certificate{apiserverCA.issue(t, "kube-apiserver", nil, x509.ExtKeyUsageClientAuth)}, true},
		{"allowed name as a DNS name", []tls.Certificate{apiserverCA.issue(t, "x", []string{"kube-apiserver"}, x509.ExtKeyUsageClientAuth)}, true},
		{"no certificate", nil, false},
		{"another name from the same CA", []tls.Certificate{apiserverCA.issue(t, "mallory", nil, x509.ExtKeyUsageClientAuth)}, false},
		{"the right name from another CA", []tls.Certificate{otherCA.issue(t, "kube-apiserver", nil, x509.ExtKeyUsageClientAuth)}, false},
		{"a server-only certificate", []tls.Certificate{apiserverCA.issue(t, "kube-apiserver", nil, x509.ExtKeyUsageServerAuth)}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := call(c.certs...); (err == nil) != c.ok {
				t.Errorf("request error %v, want success %v", err, c.ok)
			}
		})
	}

	// A rotated bundle is picked up without a restart; a broken one keeps
	// the bundle loaded before.
	writeFile(t, caFile, otherCA.pem, time.Unix(2000, 0))
	if err := call(otherCA.issue(t, "kube-apiserver", nil, x509.ExtKeyUsageClientAuth)); err != nil {
		t.Errorf("after rotating the CA file: %v", err)
	}
	if err := call(apiserverCA.issue(t, "kube-apiserver", nil, x509.ExtKeyUsageClientAuth)); err == nil {
		t.Error("the old CA is still trusted after rotation")
	}
	writeFile(t, caFile, []byte("not pem"), time.Unix(3000, 0))
	if err := call(otherCA.issue(t, "kube-apiserver", nil, x509.ExtKeyUsageClientAuth)); err != nil {
		t.Errorf("after a broken CA file: %v, want the previous bundle kept", err)
	}
}

func TestNewClientAuthRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.crt")
	writeFile(t, bad, []byte("nothing"), time.Now())
	for _, path := range []string{bad, filepath.Join(dir, "missing.crt")} {
		if _, err := NewClientAuth(path, nil, time.Second, time.Now); err == nil {
			t.Errorf("%s: want an error", filepath.Base(path))
		}
	}
}

// TestKeySources: both sources give the same material for the same key,
// and new material when the key changes.
func TestKeySources(t *testing.T) {
	ca := newTestCA(t, "serving-ca")
	serving := ca.issue(t, "spillway-controller", []string{"localhost"}, x509.ExtKeyUsageServerAuth)
	ecKey := serving.PrivateKey.(*ecdsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "tls.key")
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), time.Unix(1000, 0))

	current := &serving
	fromCert := CertKeySource(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return current, nil })
	fromFile := FileKeySource(keyFile, 0, time.Now)
	a, err := fromCert()
	if err != nil {
		t.Fatal(err)
	}
	b, err := fromFile()
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) || len(a) == 0 {
		t.Fatal("the certificate and the file of the same key give different material")
	}

	rotated := ca.issue(t, "spillway-controller", []string{"localhost"}, x509.ExtKeyUsageServerAuth)
	current = &rotated
	pkcs8, err := x509.MarshalPKCS8PrivateKey(rotated.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), time.Unix(2000, 0))
	a2, _ := fromCert()
	b2, _ := fromFile()
	if string(a2) == string(a) || string(b2) == string(b) || string(a2) != string(b2) {
		t.Error("a rotated key must give new material, the same from both sources")
	}
}

// TestReadinessWithClientAuth: controller-runtime's readiness check dials
// the webhook port without a certificate; it must still pass.
func TestReadinessWithClientAuth(t *testing.T) {
	ca := newTestCA(t, "ca")
	serving := ca.issue(t, "localhost", []string{"localhost"}, x509.ExtKeyUsageServerAuth)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	writeFile(t, caFile, ca.pem, time.Now())
	auth, err := NewClientAuth(caFile, nil, time.Second, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	port, err := localcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, TLSOpts: []func(*tls.Config){
		func(c *tls.Config) {
			c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serving, nil }
		},
		auth.Configure,
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	check := srv.StartedChecker()
	for {
		err := check(&http.Request{})
		if err == nil {
			return
		}
		// Once the server listens, the check dials it and must pass.
		if !strings.Contains(err.Error(), "not been started") {
			t.Fatalf("readiness check with client authentication: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("webhook server stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
