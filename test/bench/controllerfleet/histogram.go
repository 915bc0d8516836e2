package main

import (
	"math"
	"sort"
	"strconv"
	"strings"
)

// histogram is a Prometheus histogram's cumulative buckets, summed over the
// series a filter keeps.
type histogram struct {
	bounds []float64 // finite upper bounds, ascending
	cum    []float64 // cumulative count at each bound
	count  float64   // all observations (+Inf)
}

// histogramOf reads histogram name from a scrape (series → value), summing
// the series keep accepts.
func histogramOf(m map[string]float64, name string, keep func(series string) bool) histogram {
	byBound := map[float64]float64{}
	var h histogram
	for series, v := range m {
		switch {
		case strings.HasPrefix(series, name+"_bucket{") && keep(series):
			le, ok := labelValue(series, "le")
			if !ok || le == "+Inf" {
				continue
			}
			bound, err := strconv.ParseFloat(le, 64)
			if err != nil {
				continue
			}
			byBound[bound] += v
		case (series == name+"_count" || strings.HasPrefix(series, name+"_count{")) && keep(series):
			h.count += v
		}
	}
	for bound := range byBound {
		h.bounds = append(h.bounds, bound)
	}
	sort.Float64s(h.bounds)
	for _, bound := range h.bounds {
		h.cum = append(h.cum, byBound[bound])
	}
	return h
}

// labelValue is the value of label in a series written as
// name{a="x",b="y"}.
func labelValue(series, label string) (string, bool) {
	for _, p := range []string{"{" + label + `="`, "," + label + `="`} {
		if i := strings.Index(series, p); i >= 0 {
			rest := series[i+len(p):]
			if end := strings.IndexByte(rest, '"'); end >= 0 {
				return rest[:end], true
			}
		}
	}
	return "", false
}

// minus is the observations of h not in before (h's buckets; before must
// be an earlier scrape of the same series).
func (h histogram) minus(before histogram) histogram {
	out := histogram{bounds: h.bounds, cum: make([]float64, len(h.cum)), count: h.count - before.count}
	for i, bound := range h.bounds {
		out.cum[i] = h.cum[i]
		if j := sort.SearchFloat64s(before.bounds, bound); j < len(before.bounds) && before.bounds[j] == bound {
			out.cum[i] -= before.cum[j]
		}
	}
	return out
}

// quantile is the q-quantile in seconds, interpolated linearly within its
// bucket as Prometheus' histogram_quantile does; +Inf when it lies above
// the last finite bound, NaN without observations.
func (h histogram) quantile(q float64) float64 {
	if h.count <= 0 {
		return math.NaN()
	}
	rank := q * h.count
	lower, below := 0.0, 0.0
	for i, bound := range h.bounds {
		if h.cum[i] >= rank {
			if h.cum[i] == below {
				return bound
			}
			return lower + (bound-lower)*(rank-below)/(h.cum[i]-below)
		}
		lower, below = bound, h.cum[i]
	}
	return math.Inf(1)
}

// within is the share of observations at most bound seconds, exact when
// bound is a bucket bound; NaN when it is not or there are none.
func (h histogram) within(bound float64) float64 {
	for i, b := range h.bounds {
		if b == bound && h.count > 0 {
			return h.cum[i] / h.count
		}
	}
	return math.NaN()
}
