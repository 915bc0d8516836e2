package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		invalid  bool
		wantDone bool
		wantOut  string
		wantErr  []string
	}{
		{name: "plain run", args: []string{"--level=3"}},
		{name: "help", args: []string{"--help"}, wantDone: true, wantOut: "usage: demo"},
		{name: "version", args: []string{"--version"}, wantDone: true, wantOut: "demo "},
		{name: "help before a bad value", args: []string{"--help", "--level=x"}, wantDone: true, wantOut: "--level"},
		{name: "bad value before help", args: []string{"--level=x", "--help"}, wantErr: []string{"invalid argument", "(see sub --help)"}},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: []string{"unknown flag: --nope", "(see sub --help)"}},
		{name: "stray argument", args: []string{"extra"}, wantErr: []string{`unexpected arguments ["extra"]`}},
		{name: "stray argument and invalid value together", args: []string{"extra"}, invalid: true, wantErr: []string{"unexpected arguments", "level must be positive"}},
		{name: "version skips validation", args: []string{"--version"}, invalid: true, wantDone: true, wantOut: "demo "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
			level := fs.Int("level", 1, "how much")
			showVersion := fs.Bool("version", false, "print the version")
			var out bytes.Buffer
			done, err := Command{
				Binary:      "demo",
				Flags:       fs,
				Help:        func() string { return "usage: demo\n" + fs.FlagUsages() },
				HelpHint:    "sub --help",
				ShowVersion: showVersion,
				Validate: func() error {
					if tt.invalid || *level <= 0 {
						return errors.New("level must be positive")
					}
					return nil
				},
			}.Parse(tt.args, &out)
			if done != tt.wantDone {
				t.Errorf("done = %v, want %v", done, tt.wantDone)
			}
			if tt.wantOut != "" && !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q lacks %q", out.String(), tt.wantOut)
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
		})
	}
}
