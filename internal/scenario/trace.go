// Package scenario is the seed scenario as data and arithmetic: a tidal-day
// demand trace, the oracle replica plan, the timeline a run records, and the
// figures and chart made from it. The demo, the e2e test and the tidal
// benchmark drive the cluster; this package only computes, so it is tested
// without one.
package scenario

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Point is the demand from a minute of the day onwards.
type Point struct {
	Minute int     // minute of the day, 0..1439
	RPS    float64 // requests per second
}

// Trace is demand over a day, stepwise: each point holds until the next.
type Trace struct {
	Points []Point
	// Events are scripted disturbances, such as restarting the on-prem pod.
	Events []Event
}

// Event is a scripted action at a minute of the day.
type Event struct {
	Minute int
	Action string // "restart-onprem-pod"
}

// ParseTrace reads "minute,rps" lines. Blank lines and lines starting with
// '#' are ignored; a header line "minute,rps" is allowed; "minute,event,NAME"
// lines add events. Minutes must increase strictly and lie in 0..1439.
func ParseTrace(data []byte) (*Trace, error) {
	t := &Trace{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") || strings.EqualFold(s, "minute,rps") {
			continue
		}
		f := strings.Split(s, ",")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		minute, err := strconv.Atoi(f[0])
		if err != nil || minute < 0 || minute >= 1440 {
			return nil, fmt.Errorf("trace line %d: minute %q is not an integer in 0..1439", line, f[0])
		}
		if len(f) == 3 && f[1] == "event" {
			if f[2] != "restart-onprem-pod" {
				return nil, fmt.Errorf("trace line %d: unknown event %q (known: restart-onprem-pod)", line, f[2])
			}
			t.Events = append(t.Events, Event{Minute: minute, Action: f[2]})
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("trace line %d: want \"minute,rps\" or \"minute,event,NAME\", got %q", line, s)
		}
		rps, err := strconv.ParseFloat(f[1], 64)
		if err != nil || math.IsNaN(rps) || math.IsInf(rps, 0) || rps < 0 {
			return nil, fmt.Errorf("trace line %d: rps %q is not a finite number >= 0", line, f[1])
		}
		if n := len(t.Points); n > 0 && minute <= t.Points[n-1].Minute {
			return nil, fmt.Errorf("trace line %d: minute %d does not follow minute %d", line, minute, t.Points[n-1].Minute)
		}
		t.Points = append(t.Points, Point{Minute: minute, RPS: rps})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.Points) == 0 {
		return nil, fmt.Errorf("trace has no demand points")
	}
	sort.Slice(t.Events, func(i, j int) bool { return t.Events[i].Minute < t.Events[j].Minute })
	return t, nil
}

// At returns the demand at a minute of the day (the last point at or before
// it; before the first point, the first point's demand).
func (t *Trace) At(minute float64) float64 {
	rps := t.Points[0].RPS
	for _, p := range t.Points {
		if float64(p.Minute) > minute {
			break
		}
		rps = p.RPS
	}
	return rps
}

// Span is the first and last minute of the trace; playback ends one step
// after the last point.
func (t *Trace) Span() (first, last int) {
	return t.Points[0].Minute, t.Points[len(t.Points)-1].Minute
}
