// Command adapterload is an open-loop HTTP load generator for metrics API
// servers: it sends --rps requests per second for --duration to each target
// in turn and prints p50/p90/p99 latencies and, with several targets, each
// one's ratio to the first. With --rounds N each target's --duration is cut
// into N slices loaded round-robin, so a disturbance that comes and goes on
// the machine (a scrape, a compaction, another process's garbage
// collection) falls on every target alike instead of on whichever one
// happened to be loaded then.
//
//	go run ./test/bench/adapterload --rps 200 --duration 30s --insecure-skip-tls-verify --token "$TOKEN" \
//	  --target 'cache=https://127.0.0.1:6443/apis/external.metrics.k8s.io/v1beta1/namespaces/bench/DCGM_CUSTOM_PROCESS_SM_UTIL?labelSelector=app%3Dapp-042' \
//	  --target 'live=https://127.0.0.1:6444/apis/external.metrics.k8s.io/v1beta1/namespaces/bench/DCGM_CUSTOM_PROCESS_SM_UTIL?labelSelector=app%3Dapp-042'
//
// With --kubeconfig the kubeconfig's credentials and CA are used, and a
// target that is only a path ("/apis/...") goes to its server, i.e.
// through the kube-apiserver's aggregator.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

type options struct {
	targets     []string
	url         string
	rps         float64
	duration    time.Duration
	rounds      int
	warmup      time.Duration
	concurrency int
	timeout     time.Duration
	token       string
	tokenFile   string
	kubeconfig  string
	caFile      string
	insecure    bool
	http2       bool
	jsonOut     bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "adapterload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := pflag.NewFlagSet("adapterload", pflag.ContinueOnError)
	fs.StringArrayVar(&o.targets, "target", nil, "NAME=URL to load, repeatable; run one after another in the given order. A URL that is only a path needs --kubeconfig.")
	fs.StringVar(&o.url, "url", "", "A single URL to load (same as --target URL=URL).")
	fs.Float64Var(&o.rps, "rps", 200, "Requests per second sent to each target, whether or not earlier ones have returned (open loop).")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "How long to load each target.")
	fs.IntVar(&o.rounds, "rounds", 1, "Cut each target's --duration into this many slices and load the targets round-robin, one slice each per round, so that what disturbs the machine for a while falls on every target alike; 1 loads each target for its whole --duration in turn.")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "Load sent to each target first and not measured (connections, caches).")
	fs.IntVar(&o.concurrency, "concurrency", 50, "Most requests in flight at once; when all are busy, later requests wait and that wait shows in p99-from-schedule.")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "Per-request timeout; a timed-out request counts as an error.")
	fs.StringVar(&o.token, "token", "", "Bearer token to send.")
	fs.StringVar(&o.tokenFile, "token-file", "", "File holding the bearer token to send.")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Kubeconfig whose server, CA and credentials to use.")
	fs.StringVar(&o.caFile, "ca-file", "", "PEM CA bundle to verify the server with.")
	fs.BoolVar(&o.insecure, "insecure-skip-tls-verify", false, "Do not verify the server certificate (self-signed development certs).")
	fs.BoolVar(&o.http2, "http2", false, "Use HTTP/2 (default HTTP/1.1 with a connection per concurrent request, as hey does).")
	fs.BoolVar(&o.jsonOut, "json", false, "Print the summaries as JSON instead of a table.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.url != "" {
		o.targets = append([]string{o.url}, o.targets...)
	}
	if err := o.validate(); err != nil {
		return err
	}
	client, base, err := o.client()
	if err != nil {
		return err
	}

	// Room for every measured request up front, so the load generator does
	// not grow these while it measures.
	n := int(math.Round(o.rps*o.duration.Seconds())) + o.rounds
	tallies := make([]tally, len(o.targets))
	for i, t := range o.targets {
		tallies[i].sent = make([]time.Duration, 0, n)
		tallies[i].scheduled = make([]time.Duration, 0, n)
		tallies[i].name, tallies[i].url, _ = parseTarget(t)
		if strings.HasPrefix(tallies[i].url, "/") {
			tallies[i].url = strings.TrimRight(base, "/") + tallies[i].url
		}
	}
	slice := o.duration / time.Duration(o.rounds)
	for r := range o.rounds {
		for i := range tallies {
			t := &tallies[i]
			if r == 0 && o.warmup > 0 {
				if err := load(ctx, client, t.url, o.rps, o.warmup, o.concurrency, &tally{}); err != nil {
					return err
				}
			}
			if err := load(ctx, client, t.url, o.rps, slice, o.concurrency, t); err != nil {
				return err
			}
		}
	}
	// A target without one successful request is still reported (its
	// errors say why), and then fails the run.
	results := make([]summary, 0, len(tallies))
	var failed []error
	for i := range tallies {
		s, err := tallies[i].summary()
		if err != nil {
			failed = append(failed, err)
		}
		results = append(results, s)
	}
	if err := report(stdout, results, o.jsonOut); err != nil {
		return err
	}
	return errors.Join(failed...)
}

func (o *options) validate() error {
	var errs []error
	if len(o.targets) == 0 {
		errs = append(errs, errors.New("give --url or at least one --target"))
	}
	for _, t := range o.targets {
		_, u, err := parseTarget(t)
		if err != nil {
			errs = append(errs, err)
		} else if strings.HasPrefix(u, "/") && o.kubeconfig == "" {
			errs = append(errs, fmt.Errorf("target %q is a path: it needs --kubeconfig", t))
		}
	}
	if o.rps <= 0 {
		errs = append(errs, fmt.Errorf("--rps must be positive, got %v", o.rps))
	}
	if o.duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration must be positive, got %s", o.duration))
	}
	if o.rounds < 1 {
		errs = append(errs, fmt.Errorf("--rounds must be at least 1, got %d", o.rounds))
	} else if o.rounds > 1 && o.duration/time.Duration(o.rounds) < time.Second {
		errs = append(errs, fmt.Errorf("--duration %s in %d rounds leaves slices under a second: use fewer rounds", o.duration, o.rounds))
	}
	if o.warmup < 0 {
		errs = append(errs, fmt.Errorf("--warmup must not be negative, got %s", o.warmup))
	}
	if o.concurrency <= 0 {
		errs = append(errs, fmt.Errorf("--concurrency must be positive, got %d", o.concurrency))
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout must be positive, got %s", o.timeout))
	}
	if o.token != "" && o.tokenFile != "" {
		errs = append(errs, errors.New("give --token or --token-file, not both"))
	}
	return errors.Join(errs...)
}

// parseTarget splits "NAME=URL"; a bare URL or path names itself. The name
// cannot contain ':' or '/', so "https://h/a=b" is a bare URL.
func parseTarget(s string) (name, target string, err error) {
	name, target = s, s
	if i := strings.IndexByte(s, '='); i > 0 && !strings.ContainsAny(s[:i], ":/") {
		name, target = s[:i], s[i+1:]
	}
	if target == "" {
		return "", "", fmt.Errorf("target %q has no URL", s)
	}
	if strings.HasPrefix(target, "/") {
		return name, target, nil
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("target %q: want an http(s) URL or an absolute path", s)
	}
	return name, target, nil
}

// client builds the HTTP client and, with --kubeconfig, the server URL that
// path-only targets are resolved against.
func (o *options) client() (*http.Client, string, error) {
	var rt http.RoundTripper
	base := ""
	if o.kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return nil, "", fmt.Errorf("--kubeconfig: %w", err)
		}
		cfg = rest.CopyConfig(cfg)
		if o.insecure {
			cfg.Insecure, cfg.CAData, cfg.CAFile = true, nil, ""
		}
		if o.token != "" {
			cfg.BearerToken = o.token
		}
		if o.tokenFile != "" {
			cfg.BearerTokenFile = o.tokenFile
		}
		if !o.http2 {
			cfg.NextProtos = []string{"http/1.1"}
		}
		rt, err = rest.TransportFor(cfg)
		if err != nil {
			return nil, "", err
		}
		base = cfg.Host
	} else {
		tlsCfg := &tls.Config{InsecureSkipVerify: o.insecure} //nolint:gosec // opt-in flag for self-signed development certs
		if o.caFile != "" {
			pem, err := os.ReadFile(o.caFile)
			if err != nil {
				return nil, "", fmt.Errorf("--ca-file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, "", fmt.Errorf("--ca-file %s holds no PEM certificate", o.caFile)
			}
			tlsCfg.RootCAs = pool
		}
		tr := &http.Transport{
			TLSClientConfig:     tlsCfg,
			MaxIdleConnsPerHost: o.concurrency,
			ForceAttemptHTTP2:   o.http2,
		}
		if !o.http2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		token := o.token
		if o.tokenFile != "" {
			b, err := os.ReadFile(o.tokenFile)
			if err != nil {
				return nil, "", fmt.Errorf("--token-file: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		rt = tr
		if token != "" {
			rt = bearer{token: token, next: tr}
		}
	}
	return &http.Client{Transport: rt, Timeout: o.timeout}, base, nil
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// tally gathers one target's requests over all its slices.
type tally struct {
	name, url       string
	requests        int
	errors          int
	firstErrors     []string
	busy            time.Duration
	sent, scheduled []time.Duration
}

func (t *tally) summary() (summary, error) {
	s := summary{Name: t.name, URL: t.url, Requests: t.requests, Errors: t.errors, FirstErrors: t.firstErrors, Duration: t.busy}
	if t.busy > 0 {
		s.AchievedRPS = float64(t.requests) / t.busy.Seconds()
	}
	return s, summarize(&s, t.sent, t.scheduled)
}

// load sends requests to target at a fixed rate for d and adds them to t.
// Request i is due at start + i/rps; it waits for one of the concurrency
// slots if none is free. It returns once every request has ended, so the
// next slice never shares the machine with this one's stragglers.
func load(ctx context.Context, client *http.Client, target string, rps float64, d time.Duration, concurrency int, t *tally) error {
	n := int(math.Round(rps * d.Seconds()))
	if n < 1 {
		n = 1
	}
	interval := time.Duration(float64(time.Second) / rps)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	slots := make(chan struct{}, concurrency)
	start := time.Now()
loop:
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			select {
			case <-ctx.Done():
				break loop
			case <-time.After(wait):
			}
		}
		select {
		case <-ctx.Done():
			break loop
		case slots <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			began := time.Now()
			err := get(ctx, client, target)
			end := time.Now()
			mu.Lock()
			defer mu.Unlock()
			t.requests++
			if err != nil {
				t.errors++
				if len(t.firstErrors) < 3 {
					t.firstErrors = append(t.firstErrors, err.Error())
				}
				return
			}
			t.sent = append(t.sent, end.Sub(began))
			t.scheduled = append(t.scheduled, end.Sub(due))
		}()
	}
	wg.Wait()
	t.busy += time.Since(start)
	return ctx.Err()
}

func get(ctx context.Context, client *http.Client, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
	}
	return nil
}

func report(w io.Writer, results []summary, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\trequests\terrors\trps\tp50\tp90\tp99\tmax\tp99 from schedule\t")
	for _, s := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n", s.Name, s.Requests, s.Errors, s.AchievedRPS,
			round(s.P50), round(s.P90), round(s.P99), round(s.Max), round(s.P99Scheduled))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range results {
		for _, e := range s.FirstErrors {
			fmt.Fprintf(w, "%s error: %s\n", s.Name, e)
		}
	}
	if len(results) > 1 {
		base := results[0]
		for _, s := range results[1:] {
			fmt.Fprintf(w, "%s / %s: p50 %.1fx, p99 %.1fx\n", s.Name, base.Name, ratio(s.P50, base.P50), ratio(s.P99, base.P99))
		}
	}
	return nil
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
