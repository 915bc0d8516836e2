package cli

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/go-logr/logr"
)

func TestCgroupMemoryLimit(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    int64
		wantErr bool
	}{
		{name: "v2 limit", files: map[string]string{"memory.max": "268435456\n"}, want: 268435456},
		{name: "v2 unlimited", files: map[string]string{"memory.max": "max\n"}, want: 0},
		{name: "v1 limit", files: map[string]string{"memory/memory.limit_in_bytes": "536870912\n"}, want: 536870912},
		{name: "v1 unlimited", files: map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, want: 0},
		{name: "v2 wins over v1", files: map[string]string{"memory.max": "1048576", "memory/memory.limit_in_bytes": "2097152"}, want: 1048576},
		{name: "garbage", files: map[string]string{"memory.max": "lots"}, wantErr: true},
		{name: "zero", files: map[string]string{"memory.max": "0"}, wantErr: true},
		{name: "negative", files: map[string]string{"memory.max": "-1"}, wantErr: true},
		{name: "no cgroup files", files: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tt.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := cgroupMemoryLimit(root)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %t", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("limit = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("1000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Setenv("GOMEMLIMIT", "") // restored after the test
	os.Unsetenv("GOMEMLIMIT")
	debug.SetMemoryLimit(math.MaxInt64)
	MemoryLimit(logr.Discard(), root)
	if got := debug.SetMemoryLimit(-1); got != 900000000 {
		t.Errorf("without GOMEMLIMIT: limit %d, want 90 %% of the cgroup's 1e9", got)
	}

	os.Setenv("GOMEMLIMIT", "123MiB")
	debug.SetMemoryLimit(math.MaxInt64)
	MemoryLimit(logr.Discard(), root)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set: limit changed to %d; the operator's choice must win", got)
	}

	os.Unsetenv("GOMEMLIMIT")
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("max\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	MemoryLimit(logr.Discard(), root)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("unlimited cgroup: limit changed to %d", got)
	}
}
