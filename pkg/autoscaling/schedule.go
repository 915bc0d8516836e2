package autoscaling

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// MaxScheduleDuration bounds a window; the CRD enforces the same range.
const MaxScheduleDuration = 168 * time.Hour

// Schedule is a validated spec.schedules entry: a cron expression read in a
// time zone, whose every activation opens a window of Duration.
type Schedule struct {
	Name        string
	MinReplicas int32
	Duration    time.Duration
	Location    *time.Location
	cron        cron.Schedule
}

// ParseSchedules validates every entry and reports all problems at once,
// each prefixed with the entry it concerns. CEL cannot parse cron
// expressions or look up zones; this is where they are judged.
func ParseSchedules(in []v1alpha1.Schedule) ([]Schedule, error) {
	parser := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
	out := make([]Schedule, 0, len(in))
	var errs []error
	seen := map[string]bool{}
	for i, s := range in {
		where := fmt.Sprintf("schedules[%d] %q", i, s.Name)
		var bad []string
		if s.Name == "" {
			bad = append(bad, "name is empty")
		} else if seen[s.Name] {
			bad = append(bad, "name is used by an earlier schedule")
		}
		seen[s.Name] = true
		if s.MinReplicas < 1 {
			bad = append(bad, fmt.Sprintf("minReplicas %d is below 1", s.MinReplicas))
		}
		d := s.Duration.Duration
		if d <= 0 || d > MaxScheduleDuration {
			bad = append(bad, fmt.Sprintf("duration %s is outside (0, %s]", d, MaxScheduleDuration))
		}
		loc, err := loadZone(s.TimeZone)
		if err != nil {
			bad = append(bad, err.Error())
		}
		var sched cron.Schedule
		switch {
		case strings.Contains(s.Cron, "TZ="):
			bad = append(bad, fmt.Sprintf("cron %q carries a time zone prefix; use timeZone", s.Cron))
		case strings.HasPrefix(strings.TrimSpace(s.Cron), "@"):
			bad = append(bad, fmt.Sprintf("cron %q is a descriptor; write the 5 fields", s.Cron))
		default:
			sched, err = parser.Parse(s.Cron)
			if err != nil {
				bad = append(bad, fmt.Sprintf("cron %q: %v", s.Cron, err))
				break
			}
			if loc != nil {
				// The standard parser leaves Location as time.Local, which
				// would read the expression in the zone of the time passed
				// to Next; pin it to the schedule's zone instead.
				sched.(*cron.SpecSchedule).Location = loc
			}
			// robfig/cron gives up after five years without a match
			// ("0 0 30 2 *"); such a window would never open.
			if sched.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
				bad = append(bad, fmt.Sprintf("cron %q never fires", s.Cron))
			}
		}
		if len(bad) > 0 {
			errs = append(errs, fmt.Errorf("%s: %s", where, strings.Join(bad, "; ")))
			continue
		}
		out = append(out, Schedule{Name: s.Name, MinReplicas: s.MinReplicas, Duration: d, Location: loc, cron: sched})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func loadZone(name string) (*time.Location, error) {
	switch name {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return nil, fmt.Errorf("timeZone Local is the controller host's zone; name an IANA zone")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("timeZone %q is not a known IANA zone: %w", name, err)
	}
	return loc, nil
}

// Window is one open schedule window.
type Window struct {
	Name        string
	MinReplicas int32
	// Start is the latest activation at or before now; End is Start plus
	// the duration. An earlier, overlapping activation ends sooner, so this
	// is the window that decides when the floor drops.
	Start, End time.Time
}

// ScheduleState is the schedules evaluated at one instant.
type ScheduleState struct {
	// Active lists the open windows in spec order.
	Active []Window
	// Floor is the highest MinReplicas among open windows; 0 when none.
	Floor int32
	// NextBoundary is the earliest later instant at which a window opens or
	// closes; zero when no schedule will ever change state. Requeue there.
	NextBoundary time.Time
}

// ActiveNames is the comma-separated list of open windows, for status.
func (s ScheduleState) ActiveNames() string {
	names := make([]string, len(s.Active))
	for i, w := range s.Active {
		names[i] = w.Name
	}
	return strings.Join(names, ",")
}

// EvaluateSchedules reports which windows are open at now, the floor they
// set and the next instant that changes either. Windows are half-open,
// [start, start+duration): at exactly start+duration the window is closed.
func EvaluateSchedules(schedules []Schedule, now time.Time) ScheduleState {
	var st ScheduleState
	for _, s := range schedules {
		w, open := s.windowAt(now)
		if open {
			st.Active = append(st.Active, w)
			st.Floor = max(st.Floor, w.MinReplicas)
			st.NextBoundary = earliest(st.NextBoundary, w.End)
		}
		// The next start matters even while open: it may extend the window.
		st.NextBoundary = earliest(st.NextBoundary, s.cron.Next(now))
	}
	return st
}

// windowAt finds the latest activation in (now-duration, now].
func (s Schedule) windowAt(now time.Time) (Window, bool) {
	// Next returns the first activation strictly after its argument, so
	// this is the first start whose window could still cover now.
	lo := now.Add(-s.Duration)
	if first := s.cron.Next(lo); first.IsZero() || first.After(now) {
		return Window{}, false
	}
	// Bisect for the last x with Next(x) <= now; Next(x) is then the latest
	// start. Next is monotone in x and works in whole seconds, and starts
	// are at least a minute apart, so a one-second bracket pins it. This
	// takes ~20 steps where walking start by start could take 10,080.
	hi := now
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2)
		if n := s.cron.Next(mid); !n.IsZero() && !n.After(now) {
			lo = mid
		} else {
			hi = mid
		}
	}
	start := s.cron.Next(lo)
	return Window{Name: s.Name, MinReplicas: s.MinReplicas, Start: start, End: start.Add(s.Duration)}, true
}

func earliest(a, b time.Time) time.Time {
	switch {
	case b.IsZero():
		return a
	case a.IsZero() || b.Before(a):
		return b
	default:
		return a
	}
}
