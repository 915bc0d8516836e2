package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// summary is what one target's run produced.
type summary struct {
	Name        string        `json:"name"`
	URL         string        `json:"url"`
	Requests    int           `json:"requests"`
	Errors      int           `json:"errors"`
	Duration    time.Duration `json:"durationNs"`
	AchievedRPS float64       `json:"achievedRps"`
	// Latency is measured from when each request was sent (what hey reports).
	P50 time.Duration `json:"p50Ns"`
	P90 time.Duration `json:"p90Ns"`
	P99 time.Duration `json:"p99Ns"`
	Max time.Duration `json:"maxNs"`
	// P99Scheduled is measured from when the request was due: it includes
	// time spent waiting for a free worker, so a server that falls behind the
	// rate cannot hide it (no coordinated omission).
	P99Scheduled time.Duration `json:"p99ScheduledNs"`
	// FirstErrors holds a few error messages for the report.
	FirstErrors []string `json:"firstErrors,omitempty"`
}

// percentile is the nearest-rank percentile of sorted: the smallest value
// such that at least p percent of the values are <= it. p is in (0, 100].
func percentile(sorted []time.Duration, p float64) (time.Duration, error) {
	if len(sorted) == 0 {
		return 0, fmt.Errorf("percentile of no values")
	}
	if p <= 0 || p > 100 || math.IsNaN(p) {
		return 0, fmt.Errorf("percentile %v out of (0, 100]", p)
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1], nil
}

// summarize sorts the latencies (in place) and fills the percentiles.
func summarize(s *summary, sent, scheduled []time.Duration) error {
	if len(sent) == 0 {
		return fmt.Errorf("%s: no successful requests to measure (%d errors)", s.Name, s.Errors)
	}
	slices.Sort(sent)
	slices.Sort(scheduled)
	var err error
	for _, f := range []struct {
		dst *time.Duration
		src []time.Duration
		p   float64
	}{
		{&s.P50, sent, 50}, {&s.P90, sent, 90}, {&s.P99, sent, 99}, {&s.Max, sent, 100}, {&s.P99Scheduled, scheduled, 99},
	} {
		if *f.dst, err = percentile(f.src, f.p); err != nil {
			return err
		}
	}
	return nil
}

// ratio is how many times slower other is than base, or NaN without data.
func ratio(other, base time.Duration) float64 {
	if base <= 0 {
		return math.NaN()
	}
	return float64(other) / float64(base)
}
