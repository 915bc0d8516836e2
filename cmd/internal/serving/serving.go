// Package serving is what the spillway binaries share to reach the API
// server and to serve plain HTTP: one client configuration rule, and one
// way to bind, serve and shut down listeners.
package serving

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spillway-dev/spillway/pkg/version"
)

// ShutdownTimeout bounds a graceful shutdown: in-flight requests (a scrape,
// a probe) get this long before their connections are closed.
const ShutdownTimeout = 5 * time.Second

// RestConfig loads kubeconfig (the --kubeconfig flag), else $KUBECONFIG or
// ~/.kube/config, else the in-cluster service account, and names binary in
// the user agent.
func RestConfig(binary, kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration (set --kubeconfig, $KUBECONFIG, or run in a pod): %w", err)
	}
	cfg.UserAgent = binary + "/" + version.Version
	return cfg, nil
}

// Server is one plain-HTTP listener.
type Server struct {
	// Name prefixes its errors, e.g. "metrics server" or a flag name.
	Name    string
	Addr    string
	Handler http.Handler

	ln  net.Listener
	srv *http.Server
}

// Group is a set of bound servers that start and stop together.
type Group struct {
	servers []*Server
	errc    chan error
}

// Listen binds every server, or none: a taken port fails the start before
// anything serves.
func Listen(servers ...*Server) (*Group, error) {
	for i, s := range servers {
		ln, err := net.Listen("tcp", s.Addr)
		if err != nil {
			for _, bound := range servers[:i] {
				_ = bound.ln.Close()
			}
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		s.ln = ln
		s.srv = &http.Server{Handler: s.Handler, ReadHeaderTimeout: 10 * time.Second}
	}
	return &Group{servers: servers, errc: make(chan error, len(servers))}, nil
}

// BoundAddr is the address a server is bound to (its port when Addr asked for
// port 0).
func (s *Server) BoundAddr() string { return s.ln.Addr().String() }

// Start serves every server in its own goroutine.
func (g *Group) Start() {
	for _, s := range g.servers {
		go func() {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				g.errc <- fmt.Errorf("%s: %w", s.Name, err)
			}
		}()
	}
}

// Failed delivers the first server that stopped on its own, with why.
func (g *Group) Failed() <-chan error { return g.errc }

// Shutdown stops every server, letting in-flight requests finish within
// ShutdownTimeout of a context that outlives ctx's cancellation.
func (g *Group) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	var errs []error
	for _, s := range g.servers {
		if err := s.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shutting down the %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}
