package demo

import (
	"testing"
	"time"
)

func TestCompressedWindow(t *testing.T) {
	tests := []struct {
		window, day, want time.Duration
	}{
		{5 * time.Minute, 8 * time.Minute, 2 * time.Second}, // 1.67 s, rounded up
		{5 * time.Minute, 6 * time.Minute, 2 * time.Second}, // 1.25 s
		{5 * time.Minute, 4 * time.Minute, time.Second},     // 0.83 s
		{5 * time.Minute, time.Minute, time.Second},         // never under 1 s
		{5 * time.Minute, 24 * time.Hour, 5 * time.Minute},  // an uncompressed day
	}
	for _, tt := range tests {
		if got := CompressedWindow(tt.window, tt.day); got != tt.want {
			t.Errorf("CompressedWindow(%s, %s) = %s, want %s", tt.window, tt.day, got, tt.want)
		}
	}
}
