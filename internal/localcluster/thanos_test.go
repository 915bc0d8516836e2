package localcluster

import (
	"slices"
	"strings"
	"testing"
)

func TestReplaceDirectives(t *testing.T) {
	tests := []struct {
		name    string
		gomod   string
		want    []string
		wantErr string
	}{
		{
			name:  "none",
			gomod: "module m\n\ngo 1.26\n\nrequire a.example/x v1.0.0\n",
		},
		{
			name: "block with comments and a versioned old path",
			gomod: `module m

replace (
	// Pinning for a reason.
	capnproto.org/go/capnp/v3 => capnproto.org/go/capnp/v3 v3.0.0-alpha.30

	gopkg.in/alecthomas/kingpin.v2 v2.2.6 => github.com/alecthomas/kingpin v1.3.8 // trailing
)
`,
			want: []string{
				"capnproto.org/go/capnp/v3 => capnproto.org/go/capnp/v3 v3.0.0-alpha.30",
				"gopkg.in/alecthomas/kingpin.v2 v2.2.6 => github.com/alecthomas/kingpin v1.3.8",
			},
		},
		{
			name:  "single line",
			gomod: "module m\nreplace a.example/x => b.example/x v1.2.3\n",
			want:  []string{"a.example/x => b.example/x v1.2.3"},
		},
		{
			name:    "directory replacement is refused",
			gomod:   "module m\nreplace (\n\ta.example/x => ./staging/x\n)\n",
			wantErr: "points at a directory",
		},
		{
			name:    "unterminated block",
			gomod:   "module m\nreplace (\n\ta.example/x => b.example/x v1\n",
			wantErr: "unterminated",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := replaceDirectives([]byte(tt.gomod))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
