package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// TCPProxy stands in for a Service with several endpoints: it listens on
// one loopback port and hands each connection to one of its backends, in
// turn, skipping a backend that refuses the connection. Bytes pass through
// untouched, so TLS ends at the backend, as it does behind kube-proxy.
//
// The local harness reaches the metrics adapter through an ExternalName
// Service to localhost:<port> and the placement webhook through
// https://localhost:<port>; with a TCPProxy on that port, two replicas can
// serve one address, and killing one leaves the other serving.
//
// Unlike kube-proxy, a dead backend is skipped as soon as its port refuses
// connections, where a cluster routes to it until the endpoint controller
// drops it (seconds): failover here is an upper bound on how fast it can
// be. A backend that is hung (SIGSTOP) still accepts connections, and
// requests sent to it wait, as they would in a cluster until its readiness
// probe fails.
type TCPProxy struct {
	ln net.Listener

	mu       sync.Mutex
	backends []string
	next     int
	conns    map[net.Conn]struct{}
	served   map[string]int
	closed   bool

	refused atomic.Int64
	wg      sync.WaitGroup
}

// StartTCPProxy listens on a free loopback port and forwards to backends
// (host:port).
func StartTCPProxy(backends ...string) (*TCPProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &TCPProxy{ln: ln, backends: slices.Clone(backends), conns: map[net.Conn]struct{}{}, served: map[string]int{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is host:port of the proxy.
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's port.
func (p *TCPProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetBackends replaces the backends; open connections stay where they are.
func (p *TCPProxy) SetBackends(backends ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends = slices.Clone(backends)
}

// Served is how many connections each backend has taken.
func (p *TCPProxy) Served() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.served))
	for k, v := range p.served {
		out[k] = v
	}
	return out
}

// Refused is how many connections found no backend that accepted them.
func (p *TCPProxy) Refused() int64 { return p.refused.Load() }

// Close stops listening and drops every open connection.
func (p *TCPProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *TCPProxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.wg.Add(1)
		go p.handle(in)
	}
}

// order is the backends to try for one connection: round robin, each once.
func (p *TCPProxy) order() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.backends)
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, p.backends[(p.next+i)%n])
	}
	if n > 0 {
		p.next = (p.next + 1) % n
	}
	return out
}

// track registers an open connection; false once the proxy is closed.
func (p *TCPProxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !add {
		delete(p.conns, c)
		return true
	}
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *TCPProxy) handle(in net.Conn) {
	defer p.wg.Done()
	defer in.Close()
	if !p.track(in, true) {
		return
	}
	defer p.track(in, false)
	var out net.Conn
	for _, b := range p.order() {
		c, err := net.DialTimeout("tcp", b, time.Second)
		if err == nil {
			out = c
			p.mu.Lock()
			p.served[b]++
			p.mu.Unlock()
			break
		}
	}
	if out == nil {
		p.refused.Add(1)
		return
	}
	defer out.Close()
	if !p.track(out, true) {
		return
	}
	defer p.track(out, false)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Half-close so the other side sees EOF; a full close follows when
		// both directions are done.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

// DelayProxy is an HTTP reverse proxy in front of one server (Prometheus)
// that can be told to answer late: each request waits the set delay before
// it is forwarded, or until its client gives up. With a delay longer than a
// client's timeout, the server looks alive (it accepts connections) but
// every answer comes too late, the failure of an overloaded Prometheus.
type DelayProxy struct {
	// URL is the proxy's base URL, to give clients instead of the server's.
	URL string

	delay atomic.Int64
	srv   *http.Server
	ln    net.Listener
}

// StartDelayProxy forwards to target (a base URL) with no delay until
// SetDelay.
func StartDelayProxy(target string) (*DelayProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("proxy target: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &DelayProxy{URL: "http://" + ln.Addr().String(), ln: ln}
	rp := httputil.NewSingleHostReverseProxy(u)
	// A client that gives up (the point of a delay) is not news.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	d.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wait := time.Duration(d.delay.Load()); wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = d.srv.Serve(ln) }()
	return d, nil
}

// SetDelay sets how long each request waits before it is forwarded (0:
// none). Requests already waiting keep the delay they started with.
func (d *DelayProxy) SetDelay(wait time.Duration) { d.delay.Store(int64(wait)) }

// Close stops the proxy.
func (d *DelayProxy) Close() error { return d.srv.Close() }

// ScrapeFilter serves a copy of a scrape target's exposition with some of
// its samples left out, so a test can make part of a target's series go
// stale, as when the exporter of one node dies while the others keep
// reporting (here one exporter process serves every node). Prometheus
// scrapes the filter's address instead of the target's.
type ScrapeFilter struct {
	// Addr is host:port to scrape (path as the target's).
	Addr string

	target string
	mu     sync.Mutex
	drop   []string
	srv    *http.Server
}

// StartScrapeFilter serves targetAddr's pages unfiltered until Drop.
func StartScrapeFilter(targetAddr string) (*ScrapeFilter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &ScrapeFilter{Addr: ln.Addr().String(), target: targetAddr}
	hc := &http.Client{Timeout: 10 * time.Second}
	f.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Plain text only: the filter works on lines.
		resp, err := hc.Get("http://" + f.target + r.URL.RequestURI())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(f.filter(body))
	})}
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

// Drop leaves out, from now on, every sample line containing any of the
// strings (e.g. `Hostname="node-a"`); no strings restores the full page.
func (f *ScrapeFilter) Drop(substrings ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drop = slices.Clone(substrings)
}

func (f *ScrapeFilter) filter(body []byte) []byte {
	f.mu.Lock()
	drop := f.drop
	f.mu.Unlock()
	if len(drop) == 0 {
		return body
	}
	var out []byte
	for line := range bytes.Lines(body) {
		if line[0] != '#' && slices.ContainsFunc(drop, func(s string) bool { return bytes.Contains(line, []byte(s)) }) {
			continue
		}
		out = append(out, line...)
	}
	return out
}

// Close stops the filter.
func (f *ScrapeFilter) Close() error { return f.srv.Close() }
