package podmap

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// FuzzStartTime feeds StartTime arbitrary /proc/<pid>/stat contents. It
// must never panic, and a start time it returns must be a decimal field
// of the input after the command name.
func FuzzStartTime(f *testing.F) {
	stats, err := filepath.Glob("testdata/proc/*/stat")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range stats {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"1 (",
		"1 ()",
		"9 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5 0 0",
		"9 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 18446744073709551616 0 0",
		"9 (a) b) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7 0 0",
		"9 (x)\tS\t0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 +7 0 0",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := StartTime(data)
		if err != nil {
			if v != 0 {
				t.Fatalf("error %v with start time %d", err, v)
			}
			return
		}
		end := bytes.LastIndexByte(data, ')')
		if end < 0 {
			t.Fatalf("start time %d from a stat without a command name", v)
		}
		want := []byte(strconv.FormatUint(v, 10))
		found := false
		for _, field := range bytes.Fields(data[end+1:]) {
			// ParseUint takes no sign, so the field is the plain decimal,
			// possibly with leading zeros.
			if bytes.Equal(bytes.TrimLeft(field, "0"), bytes.TrimLeft(want, "0")) {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("start time %d is not a field after the command name of %q", v, data)
		}
	})
}

// FuzzStartTimeCommand writes the stat line the kernel would for a
// process whose command name (which the process sets itself, up to 15
// bytes of anything but NUL: spaces, parentheses and newlines included)
// is comm, and checks the start time is read back exactly.
func FuzzStartTimeCommand(f *testing.F) {
	for _, c := range []string{"python3", "a) S 1 2 3", ") ) (", "x\n1 (y) R", "", " ", "))))))))))))))) "} {
		f.Add(c, uint64(12345))
	}
	f.Add("nvidia-smi", uint64(0))
	f.Add("vllm", ^uint64(0))
	f.Fuzz(func(t *testing.T, comm string, start uint64) {
		if bytes.IndexByte([]byte(comm), 0) >= 0 {
			return // the kernel cuts the name at NUL
		}
		if len(comm) > 15 {
			comm = comm[:15] // TASK_COMM_LEN - 1
		}
		stat := fmt.Sprintf("4242 (%s) S 1 4242 4242 0 -1 4194560 1234 0 0 0 17 3 0 0 20 0 12 0 %d 123456789 2345 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n", comm, start)
		got, err := StartTime([]byte(stat))
		if err != nil || got != start {
			t.Fatalf("StartTime(%q) = %d, %v; want %d", stat, got, err, start)
		}
	})
}
