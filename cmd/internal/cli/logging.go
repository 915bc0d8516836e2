package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
)

// Logging is the one way the spillway binaries log: a logr.Logger backed
// by klog's textlogger, configured from the same -v flag, carried in the
// context (klog.FromContext), and installed as klog's logger.
//
// Why logr and klog rather than log/slog: the libraries the binaries are
// built on (client-go, k8s.io/apiserver under custom-metrics-apiserver,
// controller-runtime) log through klog and logr; with their logger as ours,
// every line of a process has one format, one destination and one
// verbosity, and no bridge sits between them.
type Logging struct {
	// Verbosity is -v: 0 logs starts, stops, state changes and failures;
	// higher levels add detail.
	Verbosity int
	// ErrorsOnly drops informational lines at every verbosity (the
	// exporter's deprecated --log-level=warn|error).
	ErrorsOnly bool
}

// AddFlags adds -v; levels says what this binary's higher levels add.
func (l *Logging) AddFlags(fs *pflag.FlagSet, levels string) {
	fs.IntVarP(&l.Verbosity, "v", "v", l.Verbosity,
		"Log verbosity (klog text format on stderr): 0 logs start, stop, state changes and failures; "+levels)
}

// Validate checks the flag values.
func (l *Logging) Validate() error {
	if l.Verbosity < 0 {
		return fmt.Errorf("-v (--v) must not be negative, got %d", l.Verbosity)
	}
	return nil
}

// Setup builds the logger writing to stderr, installs it as klog's (so
// library code logging through klog writes the same way) and returns ctx
// carrying it. klog is process-wide state by design; this is the one place
// the binaries set it.
func (l *Logging) Setup(ctx context.Context, stderr io.Writer) (context.Context, logr.Logger, error) {
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(l.Verbosity), textlogger.Output(stderr)))
	if l.ErrorsOnly {
		logger = logr.New(errorsOnly{logger.GetSink()})
	}
	// klog.V(n) in libraries checks klog's own verbosity before the logger
	// sees the call: keep the two equal.
	var level klog.Level
	if err := level.Set(strconv.Itoa(l.Verbosity)); err != nil {
		return ctx, logr.Discard(), err
	}
	klog.SetLoggerWithOptions(logger, klog.ContextualLogger(true))
	return klog.NewContext(ctx, logger), logger, nil
}

// errorsOnly passes errors and drops informational lines.
type errorsOnly struct{ logr.LogSink }

func (errorsOnly) Enabled(int) bool { return false }

func (s errorsOnly) WithValues(kv ...any) logr.LogSink {
	return errorsOnly{s.LogSink.WithValues(kv...)}
}

func (s errorsOnly) WithName(name string) logr.LogSink {
	return errorsOnly{s.LogSink.WithName(name)}
}
