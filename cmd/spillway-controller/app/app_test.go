package app

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/spillway-dev/spillway/pkg/controller"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
)

func TestHelpNamesEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	NewOptions().flags().VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(out.String(), "--"+f.Name) {
			t.Errorf("--help lacks --%s", f.Name)
		}
		if len(f.Usage) < 20 {
			t.Errorf("--%s is not explained: %q", f.Name, f.Usage)
		}
	})
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"--version"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "spillway-controller ") {
		t.Errorf("--version printed %q", out.String())
	}
}

func TestBadArguments(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag"}, "unknown flag"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"--webhook-port=70000", "--unit-cooldown=0s", "--metrics-bind-address=nope"}, "--webhook-port 70000"},
	}
	for _, c := range cases {
		err := Run(context.Background(), c.args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	certDir := t.TempDir()
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(certDir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		mutate func(*Options)
		want   []string // substrings; none = valid
	}{
		{"defaults", func(*Options) {}, nil},
		{"cert files given", func(o *Options) { o.WebhookCertDir, o.WebhookConfigName = certDir, "" }, nil},
		{"disabled endpoints", func(o *Options) { o.MetricsBindAddress, o.HealthProbeBindAddress = "0", "0" }, nil},
		{"missing cert files", func(o *Options) { o.WebhookCertDir = t.TempDir() }, []string{"tls.crt", "tls.key"}},
		{"client CA given", func(o *Options) {
			o.WebhookClientCAFile, o.WebhookClientNames = filepath.Join(certDir, "tls.crt"), []string{"kube-apiserver"}
		}, nil},
		{"missing client CA file", func(o *Options) { o.WebhookClientCAFile = filepath.Join(certDir, "ca.crt") }, []string{"--webhook-client-ca-file"}},
		{"client names without a CA", func(o *Options) { o.WebhookClientNames = []string{"kube-apiserver"} }, []string{"--webhook-client-names needs"}},
		{"lease shorter than the renew deadline", func(o *Options) { o.LeaseDuration = o.RenewDeadline }, []string{"--leader-election-lease-duration (7s)"}},
		{"renew deadline within a jittered retry", func(o *Options) { o.RenewDeadline, o.RetryPeriod = 6*time.Second, 5*time.Second }, []string{"--leader-election-renew-deadline (6s)"}},
		{"no retry period", func(o *Options) { o.RetryPeriod = 0 }, []string{"--leader-election-retry-period must be positive"}},
		{"timings unchecked without election", func(o *Options) { o.LeaderElect, o.RetryPeriod, o.LeaseDuration = false, 0, 0 }, nil},
		{"no virtual node labels", func(o *Options) { o.VirtualNodeLabels = nil }, []string{"--virtual-node-labels must name at least one label"}},
		{"bad virtual node label", func(o *Options) { o.VirtualNodeLabels = map[string]string{"bad key": "x", "ok": "bad value"} }, []string{`key "bad key"`, `value "bad value" of ok`}},
		{"bad virtual node taint key", func(o *Options) { o.VirtualNodeTaintKey = "a b" }, []string{`--virtual-node-taint-key "a b"`}},
		{"no taint key is fine", func(o *Options) { o.VirtualNodeTaintKey = "" }, nil},
		{"no API rate", func(o *Options) { o.KubeAPIQPS, o.KubeAPIBurst = 0, 0 }, []string{"--kube-api-qps must be positive, got 0", "--kube-api-burst must be at least 1, got 0"}},
		{"everything wrong at once", func(o *Options) {
			o.Namespace, o.LeaderElectionID, o.WebhookPort, o.WebhookConfigName = "", "", 0, ""
			o.WebhookServiceName, o.CertCheckInterval, o.UnitCooldown, o.ReservationTTL, o.Logging.Verbosity = "", 0, 0, -time.Second, -1
			o.HealthProbeBindAddress = ":99999"
		}, []string{"--namespace", "--leader-election-id", "--webhook-port", "--webhook-config-name", "--webhook-service-name",
			"--webhook-cert-check-interval", "--unit-cooldown", "--reservation-ttl", "--v", "--health-probe-bind-address"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := NewOptions()
			c.mutate(o)
			err := o.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	o := NewOptions()
	if got := o.leaderElectionNamespace(); got != "spillway-system" {
		t.Errorf("leader election namespace = %q", got)
	}
	want := "spillway-controller.spillway-system.svc,spillway-controller.spillway-system.svc.cluster.local,localhost,127.0.0.1"
	if got := strings.Join(o.certHosts(), ","); got != want {
		t.Errorf("cert hosts = %s", got)
	}
}

// TestWiring registers every controller and webhook on a manager that is
// never started, catching duplicate names, indexes and metrics.
func TestWiring(t *testing.T) {
	scheme, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(&rest.Config{Host: "https://127.0.0.1:1"}, manager.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		// No API server: a fixed mapper over every kind of the scheme
		// (KServe's InferenceService is not in it, as on a cluster without
		// KServe).
		MapperProvider: func(*rest.Config, *http.Client) (meta.RESTMapper, error) {
			clusterScoped := map[string]bool{"Node": true, "Namespace": true, "MutatingWebhookConfiguration": true, "PersistentVolume": true}
			m := meta.NewDefaultRESTMapper(nil)
			for gvk := range scheme.AllKnownTypes() {
				scope := meta.RESTScopeNamespace
				if clusterScoped[gvk.Kind] {
					scope = meta.RESTScopeRoot
				}
				m.Add(gvk, scope)
			}
			return m, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controller.Register(mgr, controller.Deps{
		Registerer: prometheus.NewRegistry(), Clock: clocktesting.NewFakeClock(time.Now()),
		UnitCooldown: time.Minute, ReservationTTL: time.Minute,
		PlacementKeys: func() ([]byte, error) { return []byte("serving key"), nil },
	}); err != nil {
		t.Fatal(err)
	}
}
