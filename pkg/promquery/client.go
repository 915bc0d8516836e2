package promquery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Config configures a Client.
type Config struct {
	// URL is the Prometheus base URL, e.g. http://prometheus.monitoring:9090.
	URL string
	// Timeout bounds each query, on the wire and on the server.
	Timeout time.Duration
	// RoundTripper, when set, carries the requests (TLS, auth). Nil uses
	// the client library's default transport.
	RoundTripper http.RoundTripper
	// SeriesSelector is the exporter's identity, added to every query.
	// Required: without it any scrape target could publish the metrics.
	SeriesSelector SeriesSelector
	// PodSeriesSelector is added to queries for series the pods publish
	// themselves (ScopePods), e.g. the scrape job of pod discovery. It may
	// be empty: those series are checked against the pod's IP instead.
	PodSeriesSelector SeriesSelector
}

// instantQuerier is the one method of the Prometheus API this package uses.
type instantQuerier interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...promv1.Option) (model.Value, promv1.Warnings, promv1.Infos, error)
}

// Client runs instant queries against one Prometheus server.
type Client struct {
	api      instantQuerier
	timeout  time.Duration
	identity SeriesSelector
	pods     SeriesSelector
}

// New validates cfg and builds a Client; it does not contact Prometheus.
func New(cfg Config) (*Client, error) {
	var errs []error
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		errs = append(errs, errors.New("prometheus URL is empty"))
	case err != nil:
		errs = append(errs, fmt.Errorf("prometheus URL %q: %w", cfg.URL, err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("prometheus URL %q: scheme must be http or https", cfg.URL))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("prometheus URL %q has no host", cfg.URL))
	}
	if cfg.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("prometheus timeout must be positive, got %s", cfg.Timeout))
	}
	if err := cfg.SeriesSelector.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("series selector {%s}: %w", cfg.SeriesSelector, err))
	}
	if len(cfg.PodSeriesSelector) > 0 {
		if err := cfg.PodSeriesSelector.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("pod series selector {%s}: %w", cfg.PodSeriesSelector, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: cfg.RoundTripper})
	if err != nil {
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	return &Client{api: promv1.NewAPI(c), timeout: cfg.Timeout, identity: cfg.SeriesSelector, pods: cfg.PodSeriesSelector}, nil
}

// Samples runs q, scoped to the client's SeriesSelector (or, for ScopePods,
// its PodSeriesSelector), as one instant
// query at Prometheus's own "now" (so the adapter's clock never shifts the
// evaluation window) and decodes it.
func (c *Client) Samples(ctx context.Context, q Query) (Result, error) {
	if err := q.Validate(); err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	opts := []promv1.Option{promv1.WithTimeout(c.timeout)}
	if q.LookbackDelta > 0 {
		opts = append(opts, promv1.WithLookbackDelta(q.LookbackDelta))
	}
	identity := c.identity
	if q.Scope == ScopePods {
		identity = c.pods
	}
	v, warnings, _, err := c.api.Query(ctx, q.Render(identity), time.Time{}, opts...)
	if err != nil {
		return Result{}, fmt.Errorf("prometheus query: %w", err)
	}
	res, err := Decode(v, q)
	if err != nil {
		return Result{}, err
	}
	res.Warnings = warnings
	return res, nil
}
