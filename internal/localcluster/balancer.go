package localcluster

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// RequestBalancer is an HTTPS reverse proxy that sends each request to the
// next backend in turn. TCPProxy balances connections, and kube-apiserver
// sends a webhook's reviews over one kept-alive connection, so behind it a
// burst reaches one replica; behind RequestBalancer it is split across
// all of them, as it is across a Service's endpoints once the API server
// opens several connections (more servers, more load).
type RequestBalancer struct {
	ln  net.Listener
	srv *http.Server

	mu       sync.Mutex
	backends []string
	next     int
	served   map[string]int
}

// StartRequestBalancer serves TLS with serving on 127.0.0.1 and forwards
// every request over TLS (backendTLS: the CA to trust, a client
// certificate to present) to backends in round-robin order.
func StartRequestBalancer(serving tls.Certificate, backendTLS *tls.Config, backends ...string) (*RequestBalancer, error) {
	if len(backends) == 0 {
		return nil, errors.New("request balancer needs at least one backend")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &RequestBalancer{ln: ln, backends: backends, served: map[string]int{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "https", Host: b.pick()})
		},
		Transport: &http.Transport{
			TLSClientConfig:     backendTLS,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	b.srv = &http.Server{
		Handler:           proxy,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = b.srv.ServeTLS(ln, "", "") }()
	return b, nil
}

func (b *RequestBalancer) pick() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	backend := b.backends[b.next%len(b.backends)]
	b.next++
	b.served[backend]++
	return backend
}

// Port is the port it listens on (127.0.0.1).
func (b *RequestBalancer) Port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// Served is how many requests each backend was sent.
func (b *RequestBalancer) Served() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]int, len(b.served))
	for k, v := range b.served {
		out[k] = v
	}
	return out
}

// Close stops serving.
func (b *RequestBalancer) Close() error { return b.srv.Close() }
