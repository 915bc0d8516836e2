// Package nvml is the GPU backend over NVIDIA's NVML, through
// github.com/NVIDIA/go-nvml. go-nvml needs cgo (it dlopens
// libnvidia-ml.so.1 at Init), so every other file of this package carries the
// "cgo" build constraint: a CGO_ENABLED=0 build of the exporter still compiles
// and reports a clear error when --backend=nvml is asked for. This file has no
// constraint so the package exists, empty, in such builds.
package nvml
