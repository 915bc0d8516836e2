package chart

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	controllerapp "github.com/spillway-dev/spillway/cmd/spillway-controller/app"
	exporterapp "github.com/spillway-dev/spillway/cmd/spillway-gpu-exporter/app"
	adapterapp "github.com/spillway-dev/spillway/cmd/spillway-metrics-adapter/app"
)

// binaries maps the chart's container names to the binaries' command lines.
var binaries = map[string]func(ctx context.Context, args []string, stdout, stderr *bytes.Buffer) error{
	"exporter": func(ctx context.Context, args []string, stdout, stderr *bytes.Buffer) error {
		return exporterapp.Run(ctx, args, stdout, stderr)
	},
	"adapter": func(ctx context.Context, args []string, stdout, stderr *bytes.Buffer) error {
		return adapterapp.Run(ctx, args, stdout, stderr)
	},
	"controller": func(ctx context.Context, args []string, stdout, stderr *bytes.Buffer) error {
		return controllerapp.Run(ctx, args, stdout, stderr)
	},
}

// parses reports whether the binary's flag parser accepts args: with
// --help last, a parse that gets there prints the usage and returns nil;
// an unknown flag or a malformed value before it is an error.
func parses(run func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) error, args []string) error {
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nothing may start
	if err := run(ctx, append(slices.Clone(args), "--help"), &stdout, &stderr); err != nil {
		return err
	}
	if !strings.Contains(stdout.String(), "--") {
		return fmt.Errorf("no usage printed for --help:\n%s%s", stdout.String(), stderr.String())
	}
	return nil
}

func TestChartArgsAreFlagsOfTheBinaries(t *testing.T) {
	// The check itself must be able to fail.
	for name, run := range binaries {
		if err := parses(run, []string{"--no-such-flag=1"}); err == nil {
			t.Errorf("%s: an unknown flag parsed; the check below proves nothing", name)
		}
	}
	for _, v := range Variants() {
		t.Run(v.Name, func(t *testing.T) {
			cs, err := Containers(render(t, v.Set...))
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) == 0 {
				t.Fatal("no containers rendered")
			}
			for _, c := range cs {
				run, ok := binaries[c.Name]
				if !ok {
					t.Errorf("%s: container %q runs no known binary", c.Workload, c.Name)
					continue
				}
				if err := parses(run, c.Args); err != nil {
					t.Errorf("%s container %s: the binary rejects the chart's args %q: %v", c.Workload, c.Name, c.Args, err)
				}
				if c.Name == "exporter" {
					// --node-name defaults to $NODE_NAME.
					from, _ := c.Env["NODE_NAME"].(map[string]any)
					path, _, _ := unstructured.NestedString(from, "fieldRef", "fieldPath")
					if path != "spec.nodeName" {
						t.Errorf("%s: NODE_NAME is %v, want the downward API's spec.nodeName", c.Workload, c.Env["NODE_NAME"])
					}
				}
			}
		})
	}
}
