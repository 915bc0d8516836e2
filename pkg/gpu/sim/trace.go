package sim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// AllWorkloads is the trace key of rows without a workload column: they
// apply to every workload that has no rows of its own.
const AllWorkloads = "*"

// Trace is a load trace: requests per second over time, per workload.
//
// File format (CSV, '#' starts a comment line, an optional header row):
//
//	minute,workload,rps     # one series per workload ("namespace/name")
//	minute,rps              # one series for every workload
//
// In the three-column form, workload "*" is the series for every workload
// without rows of its own.
// minute is the offset from the trace start (fractions allowed) and must
// increase strictly within a series; rps must be a finite number >= 0.
// Between rows the load is interpolated linearly; before the first row it is
// the first row's value, after the last row it is the last row's value
// unless the trace loops.
type Trace struct {
	series map[string][]point
	// Loop repeats each series over [0, its last minute).
	Loop bool
}

type point struct{ minute, rps float64 }

// ReadTraceFile parses a trace file.
func ReadTraceFile(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	defer f.Close()
	t, err := ParseTrace(f)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return t, nil
}

// ParseTrace parses the CSV format described on Trace. Every bad row is
// reported, with its line number.
func ParseTrace(r io.Reader) (*Trace, error) {
	t := &Trace{series: map[string][]point{}}
	var errs []error
	sc := bufio.NewScanner(r)
	line, rows := 0, 0
	width := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Split(text, ",")
		for i := range fields {
			fields[i] = strings.TrimSpace(fields[i])
		}
		if rows == 0 && width == 0 && strings.EqualFold(fields[0], "minute") {
			width = len(fields) // header
			continue
		}
		rows++
		if len(fields) != 2 && len(fields) != 3 {
			errs = append(errs, fmt.Errorf("line %d: want minute,rps or minute,workload,rps; got %d fields", line, len(fields)))
			continue
		}
		if width != 0 && len(fields) != width {
			errs = append(errs, fmt.Errorf("line %d: %d fields, the header has %d", line, len(fields), width))
			continue
		}
		key, rpsField := AllWorkloads, fields[1]
		if len(fields) == 3 {
			key, rpsField = fields[1], fields[2]
			if err := ValidateWorkload(key); key != AllWorkloads && err != nil {
				errs = append(errs, fmt.Errorf("line %d: %w", line, err))
				continue
			}
		}
		minute, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(minute) || math.IsInf(minute, 0) || minute < 0 {
			errs = append(errs, fmt.Errorf("line %d: minute %q is not a number >= 0", line, fields[0]))
			continue
		}
		rps, err := ParseRPS(rpsField)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", line, err))
			continue
		}
		s := t.series[key]
		if n := len(s); n > 0 && minute <= s[n-1].minute {
			errs = append(errs, fmt.Errorf("line %d: minute %g does not follow %g for %s", line, minute, s[n-1].minute, key))
			continue
		}
		t.series[key] = append(s, point{minute, rps})
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 && len(t.series) == 0 {
		errs = append(errs, errors.New("no rows"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// ParseRPS parses a requests-per-second value: a finite number >= 0.
func ParseRPS(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !validRPS(v) {
		return 0, fmt.Errorf("rps %q is not a finite number >= 0", s)
	}
	return v, nil
}

func validRPS(v float64) bool { return v >= 0 && !math.IsInf(v, 1) }

// ValidateWorkload checks a workload key: "namespace/name".
func ValidateWorkload(w string) error {
	ns, name, ok := strings.Cut(w, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("workload %q: want namespace/name", w)
	}
	return nil
}

// RPS is the load of workload at the given trace minute. ok is false when
// the trace has no series for it (nor an all-workloads series).
func (t *Trace) RPS(workload string, minute float64) (rps float64, ok bool) {
	if t == nil {
		return 0, false
	}
	s, ok := t.series[workload]
	if !ok {
		if s, ok = t.series[AllWorkloads]; !ok {
			return 0, false
		}
	}
	return interpolate(s, minute, t.Loop), true
}

// Workloads lists the workloads with a series of their own.
func (t *Trace) Workloads() []string {
	if t == nil {
		return nil
	}
	var ws []string
	for w := range t.series {
		if w != AllWorkloads {
			ws = append(ws, w)
		}
	}
	return ws
}

func interpolate(s []point, minute float64, loop bool) float64 {
	last := s[len(s)-1]
	if loop && last.minute > 0 {
		minute = math.Mod(max(minute, 0), last.minute)
	}
	if minute <= s[0].minute {
		return s[0].rps
	}
	if minute >= last.minute {
		return last.rps
	}
	// Traces are short (minutes to hours of rows); a linear scan is fine.
	for i := 1; i < len(s); i++ {
		if minute <= s[i].minute {
			a, b := s[i-1], s[i]
			// The fraction first: it lies in [0, 1], so the result stays
			// between a.rps and b.rps where (b.rps-a.rps)*(minute-a.minute)
			// alone could overflow to ±Inf.
			return a.rps + (b.rps-a.rps)*((minute-a.minute)/(b.minute-a.minute))
		}
	}
	return last.rps
}
