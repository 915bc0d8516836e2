package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
	"github.com/spillway-dev/spillway/test/framework"
)

// testAdapterWritePort is where custom-metrics-apiserver's test-adapter
// takes metric values (hard-coded there, on all interfaces).
const testAdapterWritePort = 8080

// servers are the metrics API servers, each on its own secure port.
type servers struct {
	floorPort, cachePort, livePort, fixedPort int
	// aggregator: the cache adapter is also registered through APIServices.
	aggregator bool
	// cacheProc is the cache adapter's process (stopped before KEDA takes
	// external.metrics.k8s.io).
	cacheProc *localcluster.Process
}

func checkPortFree(port int) error {
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return fmt.Errorf("the test-adapter needs port %d for its value endpoint, but it is taken: %w", port, err)
	}
	return ln.Close()
}

// binaries are the servers' executables.
type binaries struct {
	// adapter is spillway-metrics-adapter; live the benchmark's
	// request-time-PromQL server over the same provider; testAdapter the
	// library's floor; fixed the floor with spillway's answer size
	// (test/bench/fixedadapter).
	adapter, live, testAdapter, fixed string
}

// startServers runs the test-adapter, spillway-metrics-adapter, the live
// query server and the fixed-answer floor with the admin kubeconfig for
// listing, authentication and authorization.
func startServers(ctx context.Context, c *localcluster.Cluster, bins binaries, promURL string, aggregator bool, podsPerApp int) (*servers, error) {
	ports, err := localcluster.FreePorts(5)
	if err != nil {
		return nil, err
	}
	s := &servers{floorPort: ports[0], cachePort: ports[1], livePort: ports[2], fixedPort: ports[4], aggregator: aggregator}
	kc := c.KubeconfigPath()
	common := func(name string, port int) []string {
		return []string{
			"--secure-port=" + strconv.Itoa(port),
			"--bind-address=127.0.0.1",
			"--cert-dir=" + filepath.Join(c.Dir(), name+"-certs"),
			"--lister-kubeconfig=" + kc,
			"--authentication-kubeconfig=" + kc,
			"--authorization-kubeconfig=" + kc,
		}
	}
	// Its Pods API by selector lists pods through a client throttled to 5
	// req/s by default; lifted, so that path measures kube-apiserver, not the
	// throttle.
	floorArgs := append(common("test-adapter", s.floorPort), "--client-qps=1000", "--client-burst=1000")
	if _, err := c.StartProcess("test-adapter", bins.testAdapter, floorArgs, nil); err != nil {
		return nil, err
	}
	// Both spillway servers read the same series with the same staleness.
	promArgs := func(name string, port int) []string {
		return append(common(name, port),
			"--prometheus-url="+promURL,
			"--series-selector=job=\""+benchJob+"\"",
			"--max-staleness=30s",
		)
	}
	// Registered through the aggregator, the cache adapter manages its
	// certificate as the chart's default does and writes its CA into the
	// APIServices (registered first: they create its namespace), so the
	// kube-apiserver verifies it.
	var cacheTLS []string
	if aggregator {
		if err := framework.ApplyAPIServices(ctx, c, s.cachePort); err != nil {
			return nil, err
		}
		cacheTLS = framework.AdapterTLSArgs()
	}
	cacheArgs := append(promArgs("spillway-metrics-adapter-cache", s.cachePort),
		"--refresh-interval=5s", fmt.Sprintf("--self-metrics-address=127.0.0.1:%d", ports[3]))
	if s.cacheProc, err = c.StartProcess("spillway-metrics-adapter-cache", bins.adapter, append(cacheArgs, cacheTLS...), nil); err != nil {
		return nil, err
	}
	if _, err := c.StartProcess("liveadapter", bins.live, promArgs("liveadapter", s.livePort), nil); err != nil {
		return nil, err
	}
	fixedArgs := append(common("fixedadapter", s.fixedPort), "--items="+strconv.Itoa(podsPerApp), "--namespace="+benchNamespace)
	if _, err := c.StartProcess("fixedadapter", bins.fixed, fixedArgs, nil); err != nil {
		return nil, err
	}
	return s, nil
}

// seedFloor gives the test-adapter a value for each of the app's pods, so
// its Pods API answers by name and by selector.
func (s *servers) seedFloor(ctx context.Context, pods []string) error {
	hc := &http.Client{Timeout: 5 * time.Second}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for i, pod := range pods {
		u := fmt.Sprintf("http://127.0.0.1:%d/write-metrics/namespaces/%s/pods/%s/%s",
			testAdapterWritePort, benchNamespace, pod, metricnames.ProcessSMUtil)
		body := []byte(strconv.Quote(strconv.Itoa(40 + i%20)))
		if err := localcluster.Poll(wctx, 500*time.Millisecond, "the test-adapter to take its values (is it up? see its log)", func(ctx context.Context) (bool, error) {
			err := post(ctx, hc, u, body)
			return err == nil, err
		}); err != nil {
			return err
		}
	}
	return nil
}

func post(ctx context.Context, hc *http.Client, u string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", u, resp.Status)
	}
	return nil
}
