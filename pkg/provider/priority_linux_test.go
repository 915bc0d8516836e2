package provider

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spillway-dev/spillway/pkg/promquery"
)

// threadNice is the nice value of the calling OS thread. The raw system
// call answers 20 - nice (the C library turns it back).
func threadNice(t testing.TB) int {
	t.Helper()
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	return 20 - prio
}

// niceSource records the nice value of the thread that asks it for samples.
type niceSource struct {
	t     testing.TB
	seen  []int
	inner promquery.Fake
}

func (s *niceSource) Samples(ctx context.Context, q promquery.Query) (promquery.Result, error) {
	s.seen = append(s.seen, threadNice(s.t))
	return s.inner.Samples(ctx, q)
}

// TestRunRefreshesAtRefreshNice: with RefreshNice, the refresh (which
// decodes the answer as it asks the source for it) runs on a thread at
// that nice value; without, at the process's own.
func TestRunRefreshesAtRefreshNice(t *testing.T) {
	base := threadNice(t)
	const nice = 7
	if base >= nice {
		t.Skipf("the test runs at nice %d already; raising it to %d needs no test", base, nice)
	}
	for _, tt := range []struct {
		name       string
		nice, want int
	}{
		{name: "off", nice: 0, want: base},
		{name: "on", nice: nice, want: nice},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := &niceSource{t: t}
			p, err := New(Config{Source: src, Pods: podLister(t, qwenPods), RefreshInterval: testRefresh, MaxStaleness: testMaxStale, RefreshNice: tt.nice})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			done := make(chan struct{})
			// Its own goroutine: Run keeps the thread it lowered until it
			// returns, and the runtime then ends that thread.
			go func() {
				defer close(done)
				p.Run(ctx) // refreshes once, then sees the cancelled context
			}()
			select {
			case <-done:
			case <-time.After(time.Minute):
				t.Fatal("Run did not return")
			}
			if len(src.seen) == 0 {
				t.Fatal("Run sent no query")
			}
			for _, n := range src.seen {
				if n != tt.want {
					t.Errorf("refresh ran at nice %d, want %d", n, tt.want)
				}
			}
		})
	}
}
