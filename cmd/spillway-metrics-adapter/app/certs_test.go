package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	genericapiserver "k8s.io/apiserver/pkg/server"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/cmd/options"

	"github.com/spillway-dev/spillway/pkg/controller/certs"
)

func TestCertFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error; none: valid
	}{
		{name: "off by default", args: nil},
		{name: "defaults", args: []string{"--self-managed-cert"}},
		{name: "excludes cert files", args: []string{"--self-managed-cert", "--tls-cert-file=/c/tls.crt", "--tls-private-key-file=/c/tls.key"},
			want: []string{"--self-managed-cert and --tls-cert-file exclude each other"}},
		{name: "everything empty", args: []string{"--self-managed-cert", "--namespace=", "--cert-secret=", "--service-name=", "--cert-check-interval=0"},
			want: []string{"--namespace must not be empty", "--cert-secret must not be empty", "--service-name or --cert-hosts", "--cert-check-interval must be positive"}},
		{name: "hosts instead of a service", args: []string{"--self-managed-cert", "--service-name=", "--cert-hosts=adapter.example.com"}},
		{name: "no APIServices", args: []string{"--self-managed-cert", "--apiservices="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewOptions()
			own, lib := o.ownFlags(), o.libraryFlags()
			var ownArgs, libArgs []string
			for _, a := range tt.args {
				if strings.HasPrefix(a, "--tls-") {
					libArgs = append(libArgs, a)
				} else {
					ownArgs = append(ownArgs, a)
				}
			}
			if err := own.Parse(append(ownArgs, "--prometheus-url=http://prom:9090")); err != nil {
				t.Fatal(err)
			}
			if err := lib.Parse(libArgs); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}

func TestCertDefaults(t *testing.T) {
	c := defaultCertOptions()
	// The kube-apiserver verifies an aggregated server for <service>.<namespace>.svc.
	if got := c.hosts(); !slices.Equal(got, []string{"spillway-metrics-adapter.spillway-system.svc", "spillway-metrics-adapter.spillway-system.svc.cluster.local"}) {
		t.Errorf("hosts = %q", got)
	}
	if !slices.Equal(c.APIServices, []string{"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io", "v1beta1.external.metrics.k8s.io"}) {
		t.Errorf("APIServices = %q", c.APIServices)
	}
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"--self-managed-cert", "--cert-secret", "--service-name", "--cert-hosts", "--apiservices", "--cert-check-interval", "--namespace"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help lacks %s", f)
		}
	}
}

// The generic API server serves the manager's certificate and picks up a
// renewed one without a restart.
func TestServingCertReloads(t *testing.T) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	kc := fake.NewClientBuilder().WithScheme(s).Build()
	clk := clocktesting.NewFakeClock(time.Now())
	const host = "spillway-metrics-adapter.spillway-system.svc"
	m, err := certs.New(kc, certs.Options{
		Name: binaryName, SecretNamespace: "spillway-system", SecretName: "cert", Hosts: []string{host},
		CAValidity: 3 * time.Hour, CertValidity: 2 * time.Hour, RenewBefore: time.Hour, Interval: time.Hour,
	}, clk)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := options.NewCustomMetricsAdapterServerOptions()
	opts.SecureServing.Listener = ln
	opts.SecureServing.BindPort = ln.Addr().(*net.TCPAddr).Port
	opts.SecureServing.ServerCert.CertDirectory = ""
	if err := opts.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, nil); err != nil {
		t.Fatal(err)
	}
	cfg := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := opts.SecureServing.ApplyTo(&cfg.SecureServing, &cfg.LoopbackClientConfig); err != nil {
		t.Fatal(err)
	}
	cfg.EnableMetrics = false
	cfg.SecureServing.Cert = servingCert{m} // what selfManagedCert does
	srv, err := (&apiserver.Config{GenericConfig: &cfg.Config}).Complete(nil).New("test-adapter", newFloor(50), newFloor(50))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.GenericAPIServer.PrepareRun().RunWithContext(ctx)
	}()
	defer func() { cancel(); <-done }()

	// The leaf the server presents, verified as the kube-apiserver does:
	// against the bundle, for the Service's name.
	leaf := func() *x509.Certificate {
		t.Helper()
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(m.CABundle())
		var lastErr error
		for range 100 {
			conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: host, Time: clk.Now})
			if err == nil {
				defer conn.Close()
				return conn.ConnectionState().PeerCertificates[0]
			}
			lastErr = err
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("TLS handshake with the adapter: %v", lastErr)
		return nil
	}
	first := leaf()
	want, _ := m.CertKeyPEM()
	if !bytes.Contains(want, []byte("CERTIFICATE")) {
		t.Fatal("no PEM certificate")
	}

	clk.Step(70 * time.Minute) // inside the leaf's renewal window
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if got := leaf(); !got.Equal(first) {
			break
		}
		if i == 100 {
			t.Fatal("the server still presents the certificate from before the renewal")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
