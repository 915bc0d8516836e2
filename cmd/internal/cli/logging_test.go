package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

// TestLogging: -v gates detail, errors always print, ErrorsOnly keeps only
// errors, and the logger is both in the context and klog's.
func TestLogging(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		errorsOnly bool
		want, not  []string
	}{
		{name: "default", want: []string{"start", "failed"}, not: []string{"detail"}},
		{name: "verbose", args: []string{"-v=2"}, want: []string{"start", "detail", "failed", "library"}},
		{name: "long form", args: []string{"--v=2"}, want: []string{"detail"}},
		{name: "errors only", args: []string{"-v=2"}, errorsOnly: true, want: []string{"failed"}, not: []string{"start", "detail", "library"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := Logging{ErrorsOnly: tt.errorsOnly}
			fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
			l.AddFlags(fs, "2 adds detail.")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			ctx, _, err := l.Setup(context.Background(), &out)
			if err != nil {
				t.Fatal(err)
			}
			log := klog.FromContext(ctx)
			log.Info("start")
			log.V(2).Info("detail")
			log.Error(errors.New("boom"), "failed")
			klog.Background().V(2).Info("library")
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, out.String())
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out.String(), n) {
					t.Errorf("log has %q:\n%s", n, out.String())
				}
			}
		})
	}
	if err := (&Logging{Verbosity: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "--v") {
		t.Errorf("Validate(-1) = %v", err)
	}
}
