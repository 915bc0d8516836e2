package autoscaling

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/spillway-dev/spillway/pkg/apis/spillway/v1alpha1"
)

func sched(name, cron, dur, zone string, minReplicas int32) v1alpha1.Schedule {
	d, err := time.ParseDuration(dur)
	if err != nil {
		panic(err)
	}
	return v1alpha1.Schedule{Name: name, Cron: cron, Duration: metav1.Duration{Duration: d}, TimeZone: zone, MinReplicas: minReplicas}
}

func TestParseSchedulesRejects(t *testing.T) {
	tests := []struct {
		name  string
		in    []v1alpha1.Schedule
		wants []string
	}{
		{"hour out of range", []v1alpha1.Schedule{sched("peak", "0 25 * * *", "1h", "", 2)},
			[]string{`schedules[0] "peak": cron "0 25 * * *"`, "above maximum"}},
		{"too few fields", []v1alpha1.Schedule{sched("peak", "0 9 * *", "1h", "", 2)},
			[]string{`cron "0 9 * *"`, "expected exactly 5 fields"}},
		{"seconds field", []v1alpha1.Schedule{sched("peak", "0 0 9 * * *", "1h", "", 2)},
			[]string{"expected exactly 5 fields"}},
		{"descriptor", []v1alpha1.Schedule{sched("peak", "@daily", "1h", "", 2)},
			[]string{"is a descriptor"}},
		{"tz prefix", []v1alpha1.Schedule{sched("peak", "CRON_TZ=UTC 0 9 * * *", "1h", "", 2)},
			[]string{"time zone prefix; use timeZone"}},
		{"never fires", []v1alpha1.Schedule{sched("feb30", "0 0 30 2 *", "1h", "", 2)},
			[]string{`"feb30"`, "never fires"}},
		{"unknown zone", []v1alpha1.Schedule{sched("peak", "0 9 * * *", "1h", "Mars/Olympus", 2)},
			[]string{`timeZone "Mars/Olympus" is not a known IANA zone`}},
		{"local zone", []v1alpha1.Schedule{sched("peak", "0 9 * * *", "1h", "Local", 2)},
			[]string{"timeZone Local"}},
		{"zero duration", []v1alpha1.Schedule{sched("peak", "0 9 * * *", "0s", "", 2)},
			[]string{"duration 0s is outside"}},
		{"long duration", []v1alpha1.Schedule{sched("peak", "0 9 * * *", "169h", "", 2)},
			[]string{"duration 169h0m0s is outside"}},
		{"zero floor", []v1alpha1.Schedule{sched("peak", "0 9 * * *", "1h", "", 0)},
			[]string{"minReplicas 0 is below 1"}},
		{"duplicate names", []v1alpha1.Schedule{sched("peak", "0 9 * * *", "1h", "", 2), sched("peak", "0 19 * * *", "1h", "", 2)},
			[]string{`schedules[1] "peak": name is used by an earlier schedule`}},
		{"every problem reported", []v1alpha1.Schedule{sched("a", "0 25 * * *", "1h", "", 2), sched("b", "0 9 * * *", "1h", "Nowhere/City", 2)},
			[]string{`schedules[0] "a"`, `schedules[1] "b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSchedules(tt.in)
			if err == nil {
				t.Fatalf("ParseSchedules accepted %+v: %+v", tt.in, got)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestParseSchedulesAccepts(t *testing.T) {
	in := []v1alpha1.Schedule{
		sched("weekday", "30 8 * * MON-FRI", "3h30m", "Asia/Shanghai", 4),
		sched("utc", "*/15 * * * *", "5m", "", 2),
		sched("named-utc", "0 0 1 JAN *", "1h", "UTC", 2),
	}
	got, err := ParseSchedules(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("got %d schedules, want %d", len(got), len(in))
	}
	if got[0].Location.String() != "Asia/Shanghai" || got[1].Location != time.UTC || got[2].Location != time.UTC {
		t.Errorf("locations: %v %v %v", got[0].Location, got[1].Location, got[2].Location)
	}
	if got[0].Duration != 210*time.Minute || got[0].MinReplicas != 4 {
		t.Errorf("first schedule: %+v", got[0])
	}
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestEvaluateSchedules(t *testing.T) {
	// 09:00 in Shanghai (UTC+8, no DST) is 01:00Z.
	shanghai := sched("am-peak", "0 9 * * *", "2h", "Asia/Shanghai", 3)
	tests := []struct {
		name      string
		schedules []v1alpha1.Schedule
		now       string
		active    string
		floor     int32
		next      string
	}{
		{"before the window", []v1alpha1.Schedule{shanghai}, "2026-03-02T00:59:59Z", "", 0, "2026-03-02T01:00:00Z"},
		{"at the start", []v1alpha1.Schedule{shanghai}, "2026-03-02T01:00:00Z", "am-peak", 3, "2026-03-02T03:00:00Z"},
		{"inside", []v1alpha1.Schedule{shanghai}, "2026-03-02T02:30:00.5Z", "am-peak", 3, "2026-03-02T03:00:00Z"},
		{"last instant", []v1alpha1.Schedule{shanghai}, "2026-03-02T02:59:59.999Z", "am-peak", 3, "2026-03-02T03:00:00Z"},
		{"at the end: half-open", []v1alpha1.Schedule{shanghai}, "2026-03-02T03:00:00Z", "", 0, "2026-03-03T01:00:00Z"},
		{"after", []v1alpha1.Schedule{shanghai}, "2026-03-02T12:00:00Z", "", 0, "2026-03-03T01:00:00Z"},
		{"across midnight", []v1alpha1.Schedule{sched("night", "0 22 * * *", "4h", "", 2)}, "2026-03-03T01:30:00Z", "night", 2, "2026-03-03T02:00:00Z"},
		{"weekdays skip the weekend", []v1alpha1.Schedule{sched("wd", "0 9 * * MON-FRI", "1h", "", 2)}, "2026-03-06T10:00:00Z", "", 0, "2026-03-09T09:00:00Z"},
		{"new york before DST", []v1alpha1.Schedule{sched("ny", "0 9 * * *", "1h", "America/New_York", 2)}, "2026-03-06T14:30:00Z", "ny", 2, "2026-03-06T15:00:00Z"},
		{"new york after DST", []v1alpha1.Schedule{sched("ny", "0 9 * * *", "1h", "America/New_York", 2)}, "2026-03-09T13:30:00Z", "ny", 2, "2026-03-09T14:00:00Z"},
		// robfig/cron semantics across DST, pinned so a library change shows:
		// a start in the skipped hour is skipped that day; a start in the
		// repeated hour fires twice.
		{"spring forward skips the missing hour", []v1alpha1.Schedule{sched("ny", "30 2 * * *", "10m", "America/New_York", 2)}, "2026-03-08T05:00:00Z", "", 0, "2026-03-09T06:30:00Z"},
		{"fall back repeats the hour", []v1alpha1.Schedule{sched("ny", "30 1 * * *", "10m", "America/New_York", 2)}, "2026-11-01T05:45:00Z", "", 0, "2026-11-01T06:30:00Z"},
		{"overlapping schedules take the highest floor", []v1alpha1.Schedule{
			sched("low", "0 8 * * *", "4h", "", 2),
			sched("high", "0 10 * * *", "1h", "", 5),
		}, "2026-03-02T10:15:00Z", "low,high", 5, "2026-03-02T11:00:00Z"},
		{"one schedule open, the other starting later", []v1alpha1.Schedule{
			sched("low", "0 8 * * *", "4h", "", 2),
			sched("high", "0 10 * * *", "1h", "", 5),
		}, "2026-03-02T09:00:00Z", "low", 2, "2026-03-02T10:00:00Z"},
		{"self-overlapping windows extend from the latest start", []v1alpha1.Schedule{sched("hourly", "0 * * * *", "90m", "", 2)}, "2026-03-02T10:20:00Z", "hourly", 2, "2026-03-02T11:00:00Z"},
		{"every minute for a week", []v1alpha1.Schedule{sched("always", "* * * * *", "168h", "", 2)}, "2026-03-02T10:20:30Z", "always", 2, "2026-03-02T10:21:00Z"},
		{"no schedules", nil, "2026-03-02T10:20:30Z", "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parsed, err := ParseSchedules(tt.schedules)
			if err != nil {
				t.Fatal(err)
			}
			st := EvaluateSchedules(parsed, utc(tt.now))
			if got := st.ActiveNames(); got != tt.active {
				t.Errorf("active = %q, want %q", got, tt.active)
			}
			if st.Floor != tt.floor {
				t.Errorf("floor = %d, want %d", st.Floor, tt.floor)
			}
			var want time.Time
			if tt.next != "" {
				want = utc(tt.next)
			}
			if !st.NextBoundary.Equal(want) {
				t.Errorf("next boundary = %v, want %v", st.NextBoundary.UTC(), want)
			}
		})
	}
}

// TestScheduleWalk steps through a day boundary by boundary, as the
// reconciler does with RequeueAfter, and checks the floor at each stop.
func TestScheduleWalk(t *testing.T) {
	parsed, err := ParseSchedules([]v1alpha1.Schedule{
		sched("morning", "0 8 * * *", "3h", "", 3),
		sched("lunch", "30 11 * * *", "1h", "", 2),
		sched("evening", "0 18 * * *", "2h", "", 4),
	})
	if err != nil {
		t.Fatal(err)
	}
	type stop struct {
		at     string
		active string
		floor  int32
	}
	want := []stop{
		{"2026-03-02T00:00:00Z", "", 0},
		{"2026-03-02T08:00:00Z", "morning", 3},
		{"2026-03-02T11:00:00Z", "", 0},
		{"2026-03-02T11:30:00Z", "lunch", 2},
		{"2026-03-02T12:30:00Z", "", 0},
		{"2026-03-02T18:00:00Z", "evening", 4},
		{"2026-03-02T20:00:00Z", "", 0},
		{"2026-03-03T08:00:00Z", "morning", 3},
	}
	now := utc(want[0].at)
	for i, w := range want {
		if !now.Equal(utc(w.at)) {
			t.Fatalf("stop %d at %v, want %s", i, now.UTC(), w.at)
		}
		st := EvaluateSchedules(parsed, now)
		if st.ActiveNames() != w.active || st.Floor != w.floor {
			t.Errorf("at %s: active %q floor %d, want %q %d", w.at, st.ActiveNames(), st.Floor, w.active, w.floor)
		}
		now = st.NextBoundary
	}
}

// TestLatestStartMatchesWalk checks the bisection in windowAt against the
// obvious walk from start to start, over many instants and cron shapes.
func TestLatestStartMatchesWalk(t *testing.T) {
	parsed, err := ParseSchedules([]v1alpha1.Schedule{
		sched("minutely", "* * * * *", "7h", "", 2),
		sched("odd", "7,23,59 */3 * * *", "26h", "Asia/Kolkata", 2),
		sched("weekdays", "30 8 * * MON-FRI", "168h", "America/New_York", 2),
		sched("monthly", "0 0 1 * *", "168h", "Europe/Berlin", 2),
		sched("short", "*/5 * * * *", "1m", "", 2),
	})
	if err != nil {
		t.Fatal(err)
	}
	base := utc("2026-03-01T00:00:00Z")
	for _, s := range parsed {
		for i := range 400 {
			// A stride that is not a multiple of a minute visits every
			// offset within a minute as well as whole minutes.
			now := base.Add(time.Duration(i) * 97 * time.Minute / 3)
			if i%5 == 0 {
				now = now.Truncate(time.Minute)
			}
			got, gotOpen := s.windowAt(now)
			var want time.Time
			for a := s.cron.Next(now.Add(-s.Duration)); !a.IsZero() && !a.After(now); a = s.cron.Next(a) {
				want = a
			}
			if gotOpen != !want.IsZero() || (gotOpen && !got.Start.Equal(want)) {
				t.Fatalf("%s at %v: open=%v start=%v, walk says %v", s.Name, now, gotOpen, got.Start, want)
			}
		}
	}
}

func BenchmarkEvaluateSchedulesWorstCase(b *testing.B) {
	// A week-long window over a cron that fires every minute: the longest
	// walk to the latest start that the CRD allows.
	parsed, err := ParseSchedules([]v1alpha1.Schedule{sched("always", "* * * * *", "168h", "", 2)})
	if err != nil {
		b.Fatal(err)
	}
	now := utc("2026-03-02T10:20:30Z")
	b.ReportAllocs()
	for b.Loop() {
		EvaluateSchedules(parsed, now)
	}
}

func BenchmarkEvaluateSchedulesTypical(b *testing.B) {
	parsed, err := ParseSchedules([]v1alpha1.Schedule{
		sched("morning", "0 8 * * MON-FRI", "3h", "Asia/Shanghai", 3),
		sched("evening", "0 18 * * *", "2h", "Asia/Shanghai", 4),
	})
	if err != nil {
		b.Fatal(err)
	}
	now := utc("2026-03-02T10:20:30Z")
	b.ReportAllocs()
	for b.Loop() {
		EvaluateSchedules(parsed, now)
	}
}
