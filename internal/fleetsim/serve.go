package fleetsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// Server serves one exposition on /metrics, the same bytes on every scrape
// until Set replaces them.
type Server struct {
	// Addr is host:port, the scrape target's address.
	Addr string
	srv  *http.Server
	body atomic.Pointer[[]byte]
}

// Serve starts a Server for body on a free loopback port.
func Serve(body []byte) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: ln.Addr().String()}
	s.body.Store(&body)
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(*s.body.Load())
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Set makes later scrapes read body.
func (s *Server) Set(body []byte) { s.body.Store(&body) }

// Close stops serving.
func (s *Server) Close() { _ = s.srv.Close() }

// WaitSeries polls the Prometheus HTTP API at promURL (a Prometheus or
// anything serving its query API, such as Thanos Query) until it holds want
// series of the metric, for at most timeout.
func WaitSeries(ctx context.Context, promURL string, want int, timeout time.Duration, log io.Writer) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 30 * time.Second}
	q := promURL + "/api/v1/query?query=" + url.QueryEscape("count("+metricnames.ProcessSMUtil+")")
	last := -1
	return localcluster.Poll(wctx, time.Second, fmt.Sprintf("%s to hold %d series", promURL, want), func(ctx context.Context) (bool, error) {
		n, err := promCount(ctx, hc, q)
		if err != nil {
			return false, err
		}
		if n == want {
			fmt.Fprintf(log, "[fleetsim] %s holds all %d series\n", promURL, n)
			return true, nil
		}
		if n != last {
			fmt.Fprintf(log, "[fleetsim] %s holds %d of %d series\n", promURL, n, want)
			last = n
		}
		return false, nil
	})
}

func promCount(ctx context.Context, hc *http.Client, q string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query status %q: %s", r.Status, r.Error)
	}
	if len(r.Data.Result) == 0 {
		return 0, nil
	}
	s, ok := r.Data.Result[0].Value[1].(string)
	if !ok {
		return 0, errors.New("count has no string value")
	}
	f, err := strconv.ParseFloat(s, 64)
	return int(f), err
}
