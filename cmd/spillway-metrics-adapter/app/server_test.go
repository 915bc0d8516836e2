package app

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/tools/cache"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/metrics/pkg/apis/external_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/cmd/options"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/spillway-dev/spillway/internal/fixedmetrics"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/pkg/metrictable"
	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/pkg/provider"
)

// These tests run the library's real serving stack in process (TLS, routing,
// query-parameter parsing, v1beta1/v1beta2 conversion, JSON) over the real
// provider, with authentication and authorization left out: no cluster.

const sm = metricnames.ProcessSMUtil

// startServer serves the providers on a loopback port until the test ends
// and returns the base URL and a client for it.
func startServer(t testing.TB, cm cmprovider.CustomMetricsProvider, em cmprovider.ExternalMetricsProvider) (string, *http.Client) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := options.NewCustomMetricsAdapterServerOptions()
	opts.SecureServing.Listener = ln
	opts.SecureServing.BindPort = ln.Addr().(*net.TCPAddr).Port
	opts.SecureServing.ServerCert.CertDirectory = ""
	if err := opts.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	cfg := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := opts.SecureServing.ApplyTo(&cfg.SecureServing, &cfg.LoopbackClientConfig); err != nil {
		t.Fatal(err)
	}
	cfg.EnableMetrics = false
	srv, err := (&apiserver.Config{GenericConfig: &cfg.Config}).Complete(nil).New("test-adapter", cm, em)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.GenericAPIServer.PrepareRun().RunWithContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: 64}, //nolint:gosec // self-signed test server
	}
	base := "https://" + ln.Addr().String()
	for i := 0; ; i++ {
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i == 200 {
			t.Fatalf("test server never became healthy: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return base, client
}

func get(t testing.TB, client *http.Client, u string) (int, []byte) {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

type testPod struct {
	name   string
	labels map[string]string
}

func newProvider(t testing.TB, namespace string, pods []testPod, vec model.Vector) *provider.Provider {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
		cache.NamespaceIndex:   cache.MetaNamespaceIndexFunc,
		provider.PodLabelIndex: provider.PodLabelIndexFunc,
	})
	for _, p := range pods {
		if err := idx.Add(provider.NewCachedPod(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: p.name, Labels: p.labels},
			Spec:       corev1.PodSpec{NodeName: "node-1"}, // promquery.Series's Hostname
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		})); err != nil {
			t.Fatal(err)
		}
	}
	lister, err := provider.NewInformerPods(idx)
	if err != nil {
		t.Fatal(err)
	}
	prom := &promquery.Fake{}
	prom.Set(vec, nil)
	p, err := provider.New(provider.Config{
		Source: prom, Pods: lister, Registry: prometheus.NewRegistry(),
		RefreshInterval: 5 * time.Second, MaxStaleness: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServedOverHTTP(t *testing.T) {
	now := time.Now()
	pods := []testPod{
		{"qwen-1", map[string]string{"app": "isvc.qwen-chat-predictor"}},
		{"qwen-2", map[string]string{"app": "isvc.qwen-chat-predictor"}},
		{"idle", map[string]string{"app": "idle"}},
	}
	vec := model.Vector{
		promquery.Series(sm, "llm", "qwen-1", "GPU-1", "1", 70, now),
		promquery.Series(sm, "llm", "qwen-1", "GPU-1", "2", 50, now), // capped at 100
		promquery.Series(sm, "llm", "qwen-2", "GPU-2", "1", 20, now),
	}
	p := newProvider(t, "llm", pods, vec)
	base, client := startServer(t, p, p)

	sel := url.QueryEscape("app=isvc.qwen-chat-predictor")
	aggSel := url.QueryEscape("app=isvc.qwen-chat-predictor," + provider.AggregateKey + "=avg")
	type want struct {
		code   int
		values map[string]int64 // pod (or aggregate mode) -> milli-value
		msg    string
	}
	tests := []struct {
		path string
		want want
	}{
		{"/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/" + sm + "?labelSelector=" + sel,
			want{code: 200, values: map[string]int64{"qwen-1": 100000, "qwen-2": 20000}}},
		{"/apis/custom.metrics.k8s.io/v1beta1/namespaces/llm/pods/*/" + sm + "?labelSelector=" + sel,
			want{code: 200, values: map[string]int64{"qwen-1": 100000, "qwen-2": 20000}}},
		{"/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/qwen-2/" + sm,
			want{code: 200, values: map[string]int64{"qwen-2": 20000}}},
		{"/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/" + sm + "?labelSelector=" + sel,
			want{code: 200, values: map[string]int64{"qwen-1": 100000, "qwen-2": 20000}}},
		{"/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/" + sm + "?labelSelector=" + aggSel,
			want{code: 200, values: map[string]int64{"avg": 60000}}},
		{"/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/" + sm + "?labelSelector=app%3Didle",
			want{code: 404, msg: "none of the 1 pods"}},
		{"/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/" + sm + "?labelSelector=app%3Didle",
			want{code: 404, msg: "none of the 1 pods"}},
		{"/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/" + sm + "?labelSelector=" + url.QueryEscape("app=x,"+provider.AggregateKey+"=p50"),
			want{code: 400, msg: `unknown spillway.dev/aggregate value \"p50\"`}},
		{"/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/" + sm + "?labelSelector=" + sel + "&metricLabelSelector=gpu%3D0",
			want{code: 400, msg: "metric selector"}},
		// Hostile selectors: the library's selector parser refuses them
		// before the provider sees them.
		{"/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/" + sm + "?labelSelector=" + url.QueryEscape(`app="}or{__name__=~".+"`),
			want{code: 400}},
		{"/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/" + sm + "?labelSelector=" + url.QueryEscape("app=a\nb"),
			want{code: 400}},
		{"/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/" + sm + "?labelSelector=" + url.QueryEscape(`app=~.+`),
			want{code: 400}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := get(t, client, base+tt.path)
			if code != tt.want.code {
				t.Fatalf("HTTP %d, want %d: %s", code, tt.want.code, body)
			}
			if tt.want.msg != "" && !strings.Contains(string(body), tt.want.msg) {
				t.Errorf("body %s lacks %q", body, tt.want.msg)
			}
			if tt.want.values == nil {
				return
			}
			got := map[string]int64{}
			if strings.Contains(tt.path, "external.metrics") {
				var list external_metrics.ExternalMetricValueList
				if err := json.Unmarshal(body, &list); err != nil {
					t.Fatalf("decode: %v: %s", err, body)
				}
				for _, it := range list.Items {
					key := it.MetricLabels["pod"]
					if key == "" {
						key = it.MetricLabels[provider.AggregateKey]
					}
					got[key] = it.Value.MilliValue()
				}
			} else {
				var list custom_metrics.MetricValueList
				if err := json.Unmarshal(body, &list); err != nil {
					t.Fatalf("decode: %v: %s", err, body)
				}
				for _, it := range list.Items {
					got[it.DescribedObject.Name] = it.Value.MilliValue()
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want.values) {
				t.Errorf("values = %v, want %v", got, tt.want.values)
			}
		})
	}

	// Discovery lists the fixed metric set in both groups.
	for _, path := range []string{"/apis/custom.metrics.k8s.io/v1beta2", "/apis/custom.metrics.k8s.io/v1beta1", "/apis/external.metrics.k8s.io/v1beta1"} {
		code, body := get(t, client, base+path)
		if code != 200 {
			t.Fatalf("%s: HTTP %d: %s", path, code, body)
		}
		var rl metav1.APIResourceList
		if err := json.Unmarshal(body, &rl); err != nil {
			t.Fatal(err)
		}
		if want := len(metrictable.Defaults()); len(rl.APIResources) != want {
			t.Errorf("%s lists %d resources, want %d: %s", path, len(rl.APIResources), want, body)
		}
	}
}

// newFloor answers every request with a fixed list of n items and no
// lookups: what the serving stack alone costs (like the library's
// test-adapter, whose External API answers one item).
func newFloor(n int) *fixedmetrics.Provider {
	return fixedmetrics.New(n, sm, "bench")
}
