//go:build cgo

package app

import (
	"github.com/spillway-dev/spillway/pkg/gpu"
	gpunvml "github.com/spillway-dev/spillway/pkg/gpu/nvml"
)

// cgoBuild reports whether this binary can use NVML.
const cgoBuild = true

func newNVMLSampler(library string) (gpu.Sampler, func() error, error) {
	s := gpunvml.NewSystem(library)
	if err := s.Start(); err != nil {
		return nil, nil, err
	}
	return s, s.Close, nil
}
