//go:build !cgo

package app

import (
	"errors"

	"github.com/spillway-dev/spillway/pkg/gpu"
)

// cgoBuild reports whether this binary can use NVML.
const cgoBuild = false

// go-nvml needs cgo, so a CGO_ENABLED=0 build carries the simulator only.
func newNVMLSampler(string) (gpu.Sampler, func() error, error) {
	return nil, nil, errors.New("this binary was built with CGO_ENABLED=0 and has no NVML support: use a cgo build (the release image) for --backend=nvml, or --backend=sim")
}
