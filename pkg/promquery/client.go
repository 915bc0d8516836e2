package promquery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/api"
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

// Client runs instant queries against one Prometheus server. It speaks
// the HTTP API itself rather than through the Prometheus client library,
// whose Query holds the whole body and then every series' full label map:
// at fleet size (hundreds of thousands of series) that was most of a
// refresh's CPU and memory. Here the answer is decoded as it arrives.
type Client struct {
	http     *http.Client
	endpoint *url.URL
	timeout  time.Duration
	identity SeriesSelector
	pods     SeriesSelector
	// lastSeries is how many series the last answer of each Scope held,
	// to size the next one's tables.
	lastSeries [ScopePods + 1]atomic.Int64
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
	endpoint := *u
	endpoint.Path = path.Join("/", u.Path, queryPath)
	endpoint.RawPath = ""
	return &Client{
		http:     &http.Client{Transport: noPartialResponse{rt}},
		endpoint: &endpoint,
		timeout:  cfg.Timeout,
		identity: cfg.SeriesSelector,
		pods:     cfg.PodSeriesSelector,
	}, nil
}

// queryPath is the instant-query endpoint under the server's base URL.
const queryPath = "/api/v1/query"

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
	identity := c.identity
	if q.Scope == ScopePods {
		identity = c.pods
	}
	// Parameters go in a form body (a long pod list would not fit in a
	// URL), as the Prometheus client library sends them, with its fallback
	// to GET for servers that refuse POST.
	form := c.endpoint.Query()
	form.Set("query", q.Render(identity))
	form.Set("timeout", c.timeout.String())
	if q.LookbackDelta > 0 {
		form.Set("lookback_delta", q.LookbackDelta.String())
	}
	resp, err := c.do(ctx, http.MethodPost, form)
	if err == nil && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented) {
		_ = resp.Body.Close()
		resp, err = c.do(ctx, http.MethodGet, form)
	}
	if err != nil {
		return Result{}, fmt.Errorf("prometheus query: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode/100 != 2 {
		return Result{}, fmt.Errorf("prometheus query: %w", httpError(resp))
	}
	res, a, err := decodeAnswer(resp.Body, q, int(c.lastSeries[q.Scope].Load()))
	switch {
	case err != nil && ctx.Err() != nil:
		return Result{}, fmt.Errorf("prometheus query: %w", ctx.Err())
	case a.status == "error":
		return Result{}, fmt.Errorf("prometheus query: %s: %s", a.errorType, a.errorMsg)
	case err != nil:
		return Result{}, fmt.Errorf("prometheus query: %w", err)
	case len(a.warnings) > 0:
		return Result{}, &PartialResponseError{Warnings: a.warnings, More: a.moreWarnings}
	case a.status != "success":
		return Result{}, fmt.Errorf("prometheus query: answer status %q, want success", a.status)
	}
	c.lastSeries[q.Scope].Store(int64(len(res.Samples) + res.Skipped.Total()))
	return res, nil
}

func (c *Client) do(ctx context.Context, method string, form url.Values) (*http.Response, error) {
	u := *c.endpoint
	var body io.Reader
	if method == http.MethodGet {
		u.RawQuery = form.Encode()
	} else {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		// A query changes nothing: marked idempotent (the key is not sent
		// while empty), it is retried on a kept-alive connection that the
		// server closed meanwhile, as a GET would be.
		req.Header["Idempotency-Key"] = nil
	}
	return c.http.Do(req)
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 1 << 20

// httpError describes an answer with a status other than 2xx: Prometheus
// answers a bad query with 400 or 422, and a timed out or canceled one
// with 503, and a JSON error; anything else is the server's or a proxy's
// failure, whose body is not shown.
func httpError(resp *http.Response) error {
	generic := fmt.Errorf("HTTP %s", resp.Status)
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusServiceUnavailable:
	default:
		return generic
	}
	var e struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&e); err != nil || e.Status != "error" || e.Error == "" {
		return generic
	}
	if e.ErrorType == "" {
		return errors.New(e.Error)
	}
	return fmt.Errorf("%s: %s", e.ErrorType, e.Error)
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
	// More counts the warnings beyond those kept in Warnings.
	More int
}

// maxWarnings and maxWarningLen bound the message: it ends up in every 503
// the adapter answers while the snapshot ages.
const (
	maxWarnings   = 3
	maxWarningLen = 300
)

func (e *PartialResponseError) Error() string {
	total := len(e.Warnings) + e.More
	shown := make([]string, 0, maxWarnings+1)
	for i, w := range e.Warnings {
		if i == maxWarnings {
			break
		}
		if len(w) > maxWarningLen {
			w = w[:maxWarningLen] + "..."
		}
		shown = append(shown, strconv.Quote(w))
	}
	if total > len(shown) {
		shown = append(shown, fmt.Sprintf("and %d more", total-len(shown)))
	}
	return fmt.Sprintf("prometheus query: the answer may be partial (a store or shard did not respond), so it is not used; %d warning(s): %s",
		total, strings.Join(shown, "; "))
}
