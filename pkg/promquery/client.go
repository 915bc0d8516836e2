package promquery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
	// RoundTripper, when set, carries the requests (TLS, auth: see
	// NewTransport). Nil uses the client library's default transport.
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
	case u.Query().Has(PartialResponseParam):
		errs = append(errs, fmt.Errorf("prometheus URL %q sets %s: the client always sends %s=false", cfg.URL, PartialResponseParam, PartialResponseParam))
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
	rt := cfg.RoundTripper
	if rt == nil {
		rt = api.DefaultRoundTripper
	}
	c, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: noPartialResponse{rt}})
	if err != nil {
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	return &Client{api: promv1.NewAPI(c), timeout: cfg.Timeout, identity: cfg.SeriesSelector, pods: cfg.PodSeriesSelector}, nil
}

// Samples runs q, scoped to the client's SeriesSelector (or, for ScopePods,
// its PodSeriesSelector), as one instant
// query at Prometheus's own "now" (so the adapter's clock never shifts the
// evaluation window) and decodes it. A response that carries warnings fails
// with a *PartialResponseError: the result is complete or not returned.
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
	if len(warnings) > 0 {
		return Result{}, &PartialResponseError{Warnings: warnings}
	}
	return Decode(v, q)
}

// PartialResponseParam is Thanos Query's parameter that allows (true) or
// forbids (false) answers with data from only some of its stores. The
// client always sends false, so Thanos fails the query when a store does
// not answer instead of returning what the others had; Prometheus ignores
// parameters it does not know.
const PartialResponseParam = "partial_response"

// noPartialResponse adds partial_response=false to the URL of every
// request (the API reads form values from the URL and the body alike).
type noPartialResponse struct{ next http.RoundTripper }

func (n noPartialResponse) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	q := r.URL.Query()
	q.Set(PartialResponseParam, "false")
	r.URL.RawQuery = q.Encode()
	return n.next.RoundTrip(r)
}

// PartialResponseError: the server answered but warned that the answer may
// lack series, as Thanos does when a store or shard did not respond and
// partial responses are allowed (a server that ignores partial_response,
// or a proxy in front of several). Serving such an answer would serve part
// of the fleet as if it were all of it, so it is refused whatever the
// warning says.
type PartialResponseError struct {
	Warnings []string
}

// maxWarnings and maxWarningLen bound the message: it ends up in every 503
// the adapter answers while the snapshot ages.
const (
	maxWarnings   = 3
	maxWarningLen = 300
)

func (e *PartialResponseError) Error() string {
	shown := make([]string, 0, maxWarnings)
	for i, w := range e.Warnings {
		if i == maxWarnings {
			shown = append(shown, fmt.Sprintf("and %d more", len(e.Warnings)-maxWarnings))
			break
		}
		if len(w) > maxWarningLen {
			w = w[:maxWarningLen] + "..."
		}
		shown = append(shown, strconv.Quote(w))
	}
	return fmt.Sprintf("prometheus query: the answer may be partial (a store or shard did not respond), so it is not used; %d warning(s): %s",
		len(e.Warnings), strings.Join(shown, "; "))
}
