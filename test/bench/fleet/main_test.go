package main

import (
	"strings"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	valid := func() options {
		return options{
			binDir: "bin", outDir: "out", sizes: []int{20000, 200000}, podsPerApp: 50, benchApp: 42,
			rps: 200, duration: time.Second, concurrency: 1, scrapeInterval: 15 * time.Second,
			refresh: 5 * time.Second, staleness: time.Minute, idle: time.Second, replicas: 2,
		}
	}
	tests := []struct {
		name    string
		change  func(*options)
		wantErr string
	}{
		{"defaults", func(*options) {}, ""},
		{"size of a partial app", func(o *options) { o.sizes = []int{20100} }, "not a positive multiple of 200"},
		{"sizes must grow", func(o *options) { o.sizes = []int{40000, 20000} }, "must grow"},
		{"bench app beyond the smallest size", func(o *options) { o.benchApp = 100 }, "--bench-app 100"},
		{"staleness shorter than a scrape and two refreshes", func(o *options) { o.staleness = 20 * time.Second }, "--max-staleness"},
		{"no bin dir", func(o *options) { o.binDir = "" }, "--bin-dir"},
		{"no replica", func(o *options) { o.replicas = 0 }, "--replicas must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.change(&o)
			err := o.validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}
