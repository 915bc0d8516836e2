# syntax=docker/dockerfile:1
# Multi-stage build of spillway's three binaries. `make images` prints the
# commands; build one with --target <binary>.
ARG GO_VERSION=1.26.10

FROM golang:${GO_VERSION}-bookworm AS build
ARG VERSION=v0.0.0-dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV LDFLAGS="-s -w -X github.com/spillway-dev/spillway/pkg/version.Version=${VERSION} -X github.com/spillway-dev/spillway/pkg/version.Commit=${COMMIT}"
# The exporter dlopens libnvidia-ml.so.1 through go-nvml, which needs cgo.
RUN CGO_ENABLED=1 go build -trimpath -ldflags "${LDFLAGS}" -o /out/spillway-gpu-exporter ./cmd/spillway-gpu-exporter
RUN CGO_ENABLED=0 go build -trimpath -ldflags "${LDFLAGS}" -o /out/spillway-metrics-adapter ./cmd/spillway-metrics-adapter
RUN CGO_ENABLED=0 go build -trimpath -ldflags "${LDFLAGS}" -o /out/spillway-controller ./cmd/spillway-controller

# glibc base: the NVIDIA container toolkit mounts the driver's libnvidia-ml
# into the container. Not root: /proc/<pid>/cgroup and stat are
# world-readable, and NVML needs only the device nodes the runtime mounts
# (docs/exporter.md, "What NVML and /proc need").
FROM gcr.io/distroless/base-debian12:nonroot AS spillway-gpu-exporter
COPY --from=build /out/spillway-gpu-exporter /spillway-gpu-exporter
USER 65532:65532
ENTRYPOINT ["/spillway-gpu-exporter"]

FROM gcr.io/distroless/static-debian12:nonroot AS spillway-metrics-adapter
COPY --from=build /out/spillway-metrics-adapter /spillway-metrics-adapter
USER 65532:65532
ENTRYPOINT ["/spillway-metrics-adapter"]

FROM gcr.io/distroless/static-debian12:nonroot AS spillway-controller
COPY --from=build /out/spillway-controller /spillway-controller
USER 65532:65532
ENTRYPOINT ["/spillway-controller"]
