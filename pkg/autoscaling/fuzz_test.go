package autoscaling

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

// FuzzSchedule parses a schedule entry as a user writes it in an
// InferenceScaler (cron, zone, duration) and, when it is accepted,
// evaluates it at an instant between 1678 and 2262. A rejected entry must
// say which entry and why; an accepted one must open exactly the window
// its latest activation opens, and nothing may change before NextBoundary.
func FuzzSchedule(f *testing.F) {
	seeds := []struct {
		cron, zone string
		dur        time.Duration
		now        string
	}{
		{"0 9 * * *", "Asia/Shanghai", 2 * time.Hour, "2026-03-02T02:30:00.5Z"},
		{"30 8 * * MON-FRI", "America/New_York", 3 * time.Hour, "2026-03-06T14:30:00Z"},
		{"30 2 * * *", "America/New_York", 10 * time.Minute, "2026-03-08T07:35:00Z"},
		{"30 1 * * *", "America/New_York", 10 * time.Minute, "2026-11-01T05:45:00Z"},
		{"0 * * * *", "", 90 * time.Minute, "2026-03-02T10:20:00Z"},
		{"* * * * *", "UTC", 168 * time.Hour, "2026-03-02T10:20:30Z"},
		{"*/15 * * * *", "Europe/Berlin", 5 * time.Minute, "2026-10-25T00:50:00Z"},
		{"7,23,59 */3 * * *", "Asia/Kolkata", 26 * time.Hour, "2026-03-01T00:00:00Z"},
		{"0 0 29 2 *", "", 24 * time.Hour, "2098-01-01T00:00:00Z"},
		{"0 0 1 JAN *", "Australia/Lord_Howe", time.Hour, "2025-12-31T13:15:00Z"},
		{"0 0 30 2 *", "", time.Hour, "2026-01-01T00:00:00Z"},
		{"0-59/0 * * * *", "", time.Hour, "2026-01-01T00:00:00Z"},
		{"5-1 * * * *", "", time.Hour, "2026-01-01T00:00:00Z"},
		{"@daily", "", time.Hour, "2026-01-01T00:00:00Z"},
		{"CRON_TZ=UTC 0 9 * * *", "", time.Hour, "2026-01-01T00:00:00Z"},
		{"0 9 * * *", "Local", time.Hour, "2026-01-01T00:00:00Z"},
		{"0 9 * * *", "../../etc/passwd", time.Hour, "2026-01-01T00:00:00Z"},
		{"0 9 * * *", "", 0, "2026-01-01T00:00:00Z"},
		{"0 9 * * ?", "", time.Nanosecond, "2026-01-01T09:00:00Z"},
	}
	for _, s := range seeds {
		now, err := time.Parse(time.RFC3339Nano, s.now)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s.cron, s.zone, int64(s.dur), now.UnixNano())
	}
	f.Fuzz(func(t *testing.T, cron, zone string, dur, nowNanos int64) {
		in := []v1alpha1.Schedule{{Name: "w", Cron: cron, TimeZone: zone, MinReplicas: 3, Duration: metav1.Duration{Duration: time.Duration(dur)}}}
		parsed, err := ParseSchedules(in)
		if err != nil {
			if parsed != nil {
				t.Fatalf("error %v with schedules %+v", err, parsed)
			}
			if !strings.HasPrefix(err.Error(), `schedules[0] "w": `) {
				t.Fatalf("error does not name the entry: %v", err)
			}
			return
		}
		if len(parsed) != 1 {
			t.Fatalf("one entry in, %d schedules out", len(parsed))
		}
		s := parsed[0]
		if s.Duration <= 0 || s.Duration > MaxScheduleDuration || s.Location == nil {
			t.Fatalf("accepted an invalid schedule %+v", s)
		}
		now := time.Unix(0, nowNanos)
		st := EvaluateSchedules(parsed, now)
		checkWindow(t, s, st, now)
		if st.NextBoundary.IsZero() {
			return
		}
		if !st.NextBoundary.After(now) {
			t.Fatalf("at %v: next boundary %v is not later", now, st.NextBoundary)
		}
		// Nothing changes before the boundary: the reconciler sleeps until it.
		for _, at := range []time.Time{now.Add(st.NextBoundary.Sub(now) / 2), st.NextBoundary.Add(-time.Nanosecond)} {
			if got := EvaluateSchedules(parsed, at); got.ActiveNames() != st.ActiveNames() || got.Floor != st.Floor {
				t.Fatalf("at %v: %q floor %d; at %v, before the boundary %v: %q floor %d",
					now, st.ActiveNames(), st.Floor, at, st.NextBoundary, got.ActiveNames(), got.Floor)
			}
		}
	})
}

// checkWindow asserts st against the definition: the window is open when
// an activation lies in (now-duration, now], and then starts at the latest
// such activation.
func checkWindow(t *testing.T, s Schedule, st ScheduleState, now time.Time) {
	t.Helper()
	first := s.cron.Next(now.Add(-s.Duration))
	open := !first.IsZero() && !first.After(now)
	if open != (len(st.Active) == 1) {
		t.Fatalf("at %v: first activation after now-%s is %v, but %d windows are open", now, s.Duration, first, len(st.Active))
	}
	if !open {
		if st.Floor != 0 {
			t.Fatalf("at %v: floor %d with no window open", now, st.Floor)
		}
		return
	}
	w := st.Active[0]
	switch {
	case st.Floor != s.MinReplicas || w.MinReplicas != s.MinReplicas:
		t.Fatalf("at %v: floor %d, window %+v; want %d", now, st.Floor, w, s.MinReplicas)
	case w.Start.After(now) || !w.End.After(now):
		t.Fatalf("at %v: window [%v, %v) does not cover now", now, w.Start, w.End)
	case !w.End.Equal(w.Start.Add(s.Duration)):
		t.Fatalf("window [%v, %v) is not %s long", w.Start, w.End, s.Duration)
	case !s.cron.Next(w.Start.Add(-time.Second)).Equal(w.Start):
		t.Fatalf("window start %v is not an activation", w.Start)
	}
	if later := s.cron.Next(w.Start); !later.IsZero() && !later.After(now) {
		t.Fatalf("at %v: window starts at %v but %v is a later activation", now, w.Start, later)
	}
}
