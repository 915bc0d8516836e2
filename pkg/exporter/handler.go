package exporter

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Handler returns the /metrics handler: the exporter's metrics and those
// of others (the Go runtime and process collectors), as promhttp.HandlerFor
// serves a registry holding all of them (the same status, headers and,
// once decompressed, bytes; gzip is only faster). Like Collect, it leaves
// out the process series of a stale snapshot.
//
// Why not just that: at 512 processes, gathering (a dto.Metric per series,
// checked, hashed and sorted) and text-encoding 2,560 series of 11 labels
// each took most of a scrape. Here the text format, which Prometheus asks
// for, writes each process's label set as rendered once when the process
// appeared (series.text) and only formats the values. Everything else
// (the self-metrics and others) still goes through a registry and expfmt,
// and any request the fast path does not handle exactly as promhttp would
// (protobuf, a name[] filter, an unusual Accept-Encoding, a gathering
// error) is served by promhttp over the full registry.
func (e *Exporter) Handler(errorLog promhttp.Logger, others ...prometheus.Collector) (http.Handler, error) {
	rest, full := prometheus.NewRegistry(), prometheus.NewRegistry()
	if err := rest.Register(e.self.counters()); err != nil {
		return nil, err
	}
	if err := full.Register(e); err != nil {
		return nil, err
	}
	for _, c := range others {
		if err := rest.Register(c); err != nil {
			return nil, err
		}
		if err := full.Register(c); err != nil {
			return nil, err
		}
	}
	return &metricsHandler{
		e:    e,
		rest: rest,
		full: promhttp.HandlerFor(full, promhttp.HandlerOpts{ErrorLog: errorLog}),
		log:  errorLog,
	}, nil
}

type metricsHandler struct {
	e *Exporter
	// rest gathers everything but the snapshot's metrics.
	rest prometheus.Gatherer
	// full serves every request the fast path leaves.
	full http.Handler
	log  promhttp.Logger
}

var (
	bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
	// Compression is most of a scrape's cost once the text is written
	// from cached label sets. At 512 processes (700 kB of text, on the
	// benchmark's machine) the standard library's default level, which
	// promhttp uses, takes 3.3-4.6 ms for 27 kB, its BestSpeed 0.9 ms for
	// 34 kB; klauspost/compress's BestSpeed (the same gzip format, a
	// faster encoder) 0.5 ms for 31 kB.
	gzipPool = sync.Pool{New: func() any {
		z, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed) // a valid level: no error
		return z
	}}
	linePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}
)

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The same negotiation as promhttp with default options.
	format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)
	gz, plain := acceptsGzip(r.Header)
	if format.FormatType() != expfmt.TypeTextPlain || !plain || (r.URL != nil && r.URL.Query().Has("name[]")) {
		h.full.ServeHTTP(w, r)
		return
	}
	mfs, err := h.rest.Gather()
	if err != nil {
		h.full.ServeHTTP(w, r) // reports the error as promhttp does
		return
	}
	// One snapshot and one clock reading for the whole scrape, so the
	// self-metrics describe the series served beside them.
	snap, now := h.e.snap.Load(), h.e.cfg.Clock.Now()
	mfs = append(mfs, h.e.self.snapshotFamilies(snap, now)...)
	slices.SortFunc(mfs, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	var procs *snapshot
	if snap != nil && !h.e.stale(now.Sub(snap.at)) {
		procs = snap
	}
	if h.clash(mfs, procs) {
		h.full.ServeHTTP(w, r) // a duplicate family: promhttp reports it
		return
	}

	w.Header().Add("Vary", "Accept")
	w.Header().Add("Vary", "Accept-Encoding")
	w.Header().Set("Content-Type", string(format))
	var out io.Writer = w
	if gz {
		w.Header().Set("Content-Encoding", "gzip")
		z := gzipPool.Get().(*gzip.Writer)
		z.Reset(w)
		defer func() {
			if err := z.Close(); err != nil {
				h.logf("error compressing metrics: %v", err)
			}
			gzipPool.Put(z)
		}()
		out = z
	}
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(out)
	defer func() {
		bw.Reset(nil)
		bufPool.Put(bw)
	}()
	line := linePool.Get().(*[]byte)
	defer linePool.Put(line)

	enc := expfmt.NewEncoder(bw, format)
	f := &h.e.proc
	next := 0 // the next process family, in name order
	for _, mf := range mfs {
		for ; procs != nil && next < numProcessMetrics && f.names[f.byName[next]] < mf.GetName(); next++ {
			*line = f.writeText(bw, procs, f.byName[next], *line)
		}
		if err := enc.Encode(mf); err != nil {
			h.logf("error encoding and sending metric family: %v", err)
			return
		}
	}
	for ; procs != nil && next < numProcessMetrics; next++ {
		*line = f.writeText(bw, procs, f.byName[next], *line)
	}
	if err := bw.Flush(); err != nil {
		h.logf("error sending metrics: %v", err)
	}
}

// clash reports two families of one name: the registry would refuse that
// scrape, so the fast path must not serve it either.
func (h *metricsHandler) clash(mfs []*dto.MetricFamily, procs *snapshot) bool {
	for i, mf := range mfs {
		if i > 0 && mfs[i-1].GetName() == mf.GetName() {
			return true
		}
		if procs != nil && slices.Contains(h.e.proc.names[:], mf.GetName()) {
			return true
		}
	}
	return false
}

func (h *metricsHandler) logf(format string, args ...any) {
	if h.log != nil {
		h.log.Println(strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"))
	}
}

// writeText writes process family m of snap in the text format, nothing
// when no process has it (the registry leaves empty families out). line
// is scratch space, returned for reuse. Write errors stick in w and are
// reported by its Flush.
func (f *processFamilies) writeText(w *bufio.Writer, snap *snapshot, m int, line []byte) []byte {
	header := false
	for i := range snap.samples {
		p := &snap.samples[i]
		if !p.has(m) {
			continue
		}
		if !header {
			_, _ = w.WriteString(f.header[m])
			header = true
		}
		// Name and labels go straight into w's buffer; only the value
		// is formatted on the side.
		_, _ = w.WriteString(f.names[m])
		_, _ = w.WriteString(p.s.text)
		line = append(line[:0], ' ')
		line = appendFloat(line, p.v[m])
		line = append(line, '\n')
		_, _ = w.Write(line)
	}
	return line
}

// appendFloat formats a sample value as the text format does
// (strconv's 'g' format, shortest representation).
func appendFloat(b []byte, v float64) []byte {
	switch {
	case v == 0: // -0 too
		return append(b, '0')
	case v > -1e6 && v < 1e6 && v == math.Trunc(v):
		// Most values (percentages, MiB) are whole numbers, which 'g'
		// writes as plain integers below 1e6 (where it switches to an
		// exponent); AppendInt is several times faster than the shortest
		// float search.
		return strconv.AppendInt(b, int64(v), 10)
	case math.IsInf(v, +1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// acceptsGzip reads Accept-Encoding as promhttp does, for the headers
// scrapers send: lists of bare codings ("gzip", "gzip, deflate", none).
// Like promhttp it prefers identity when identity or "*" is listed. plain
// is false for anything else (quality values, parameters, odd syntax),
// which the caller leaves to promhttp rather than read it differently.
func acceptsGzip(h http.Header) (gz, plain bool) {
	identity := false
	for _, v := range h.Values("Accept-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			c = strings.Trim(c, " \t")
			if !isToken(c) {
				return false, false
			}
			switch c {
			case "gzip":
				gz = true
			case "identity", "*":
				identity = true
			case "zstd":
				// promhttp serves it when built with its zstd package.
				return false, false
			}
		}
	}
	return gz && !identity, true
}

// isToken reports whether s is an HTTP token (RFC 9110, section 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
