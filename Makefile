# spillway — run `make help` for the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Every go command of the Makefile (builds, tests, make vuln's scan) uses this
# toolchain: the oldest Go 1.26 release without a known standard-library
# vulnerability our code reaches (make vuln). The go command fetches it through
# the Go module proxy on first use. GO_TOOLCHAIN=local uses the installed Go.
GO_TOOLCHAIN ?= go1.26.10
export GOTOOLCHAIN := $(GO_TOOLCHAIN)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/spillway-dev/spillway/pkg/version.Version=$(VERSION) -X github.com/spillway-dev/spillway/pkg/version.Commit=$(COMMIT)
BIN     := $(CURDIR)/bin
BINARIES := spillway-gpu-exporter spillway-metrics-adapter spillway-controller
# Cluster-backed packages run one at a time: two control planes on 2 cores starve each other.
E2E_TIMEOUT ?= 60m
# Real time one compressed day takes in make bench-tidal (6 runs of it: ~75 min at 12m;
# TIDAL_KEDA=true adds 4 KEDA-scaled runs, without and with a ResourcePolicy: ~2 h, and
# KEDA is built into the user cache on first use).
# A shorter day inflates fixed real-time lags: Karpenter removes an empty node ~25 s after
# it empties (up to 10 s polling + 15 s validation + termination), which at 4m per day is
# ~150 day-minutes of an idle cloud GPU per scale-in, at 12m ~50.
TIDAL_DAY ?= 12m
TIDAL_KEDA ?= false
# TIDAL_ARGS passes more flags, e.g. TIDAL_ARGS="--runs spillway,keda,keda-policy --traces tidal-day-restart"
# for three runs of one trace.
TIDAL_ARGS ?=
# make fuzz: how long each fuzz target runs, which targets (a grep -E pattern
# on their names), and extra go test flags (e.g. FUZZFLAGS=-parallel=1).
FUZZTIME  ?= 30s
FUZZ      ?= .
FUZZFLAGS ?=

CONTROLLER_GEN := $(BIN)/controller-gen
GOLANGCI_LINT  := $(BIN)/golangci-lint
HELM           := $(BIN)/helm
GOVULNCHECK    := $(BIN)/govulncheck
VULNDB_INDEXDB := $(BIN)/vulndb-indexdb

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Build
.PHONY: build
build: ## Build the three binaries into bin/ (the exporter with cgo for NVML).
	CGO_ENABLED=1 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/spillway-gpu-exporter ./cmd/spillway-gpu-exporter
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/spillway-metrics-adapter ./cmd/spillway-metrics-adapter
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/spillway-controller ./cmd/spillway-controller

.PHONY: control-plane
control-plane: ## Build the pinned control-plane binaries and Thanos into the user cache (cold: ~14 min + ~9 min for Thanos on 2 cores here; later runs reuse them).
	go run ./test/cmd/localcluster build

.PHONY: keda
keda: ## Build KEDA v2.21.0's operator and metrics API server into the user cache (the peer test/keda runs; cold: ~8 min on 2 cores).
	go run ./test/cmd/localcluster build-keda

$(CONTROLLER_GEN): tools/controller-gen/go.mod
	go -C tools/controller-gen build -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

$(GOLANGCI_LINT): tools/golangci-lint/go.mod
	go -C tools/golangci-lint build -o $@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

$(HELM): tools/helm/go.mod
	go -C tools/helm build -o $@ helm.sh/helm/v3/cmd/helm

$(GOVULNCHECK): tools/govulncheck/go.mod
	go -C tools/govulncheck build -o $@ golang.org/x/vuln/cmd/govulncheck

$(VULNDB_INDEXDB): tools/vulndb/go.mod
	go -C tools/vulndb build -o $@ golang.org/x/vulndb/cmd/indexdb

.PHONY: tools
tools: $(CONTROLLER_GEN) $(GOLANGCI_LINT) $(HELM) $(GOVULNCHECK) $(VULNDB_INDEXDB) ## Build the pinned developer tools (controller-gen, golangci-lint, helm, govulncheck, x/vulndb's indexdb) into bin/.

##@ Code generation and checks
.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate deepcopy, CRDs and RBAC from controller-gen markers.
	@# gotypesalias=0: controller-gen's deepcopy cannot copy map values of an
	@# alias type (v1alpha1.LabelValue = string, which carries the schema of
	@# label values); without Alias types they are plain strings to it. The
	@# crd generator reads the alias's markers either way.
	GODEBUG=gotypesalias=0 $(CONTROLLER_GEN) object paths=./pkg/apis/...
	$(CONTROLLER_GEN) crd paths=./pkg/apis/... output:crd:dir=config/crd
	$(CONTROLLER_GEN) rbac:roleName=spillway-controller paths=./pkg/controller/... output:rbac:dir=config/rbac
	hack/sync-chart-crds.sh

.PHONY: manifests
manifests: $(HELM) ## Render deploy/manifests from the Helm chart with default values.
	HELM=$(HELM) hack/render-manifests.sh

.PHONY: dashboards
dashboards: ## Regenerate grafana/dashboards (and the chart's copy) from their Go definitions.
	go run ./grafana/gen

.PHONY: verify
verify: generate manifests dashboards ## Fail when generated code, manifests, dashboards or go.mod/go.sum are stale.
	go mod tidy
	@if [ -n "$$(git status --porcelain -- go.mod go.sum pkg/apis config deploy grafana)" ]; then \
		echo "stale generated files or go.mod (run 'make generate manifests dashboards' and 'go mod tidy', then commit):"; \
		git status --porcelain -- go.mod go.sum pkg/apis config deploy grafana; git diff --stat; exit 1; fi

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (pinned) with the layering rules in .golangci.yml.
	$(GOLANGCI_LINT) run ./...

.PHONY: vuln
vuln: $(GOVULNCHECK) $(VULNDB_INDEXDB) ## Known vulnerabilities our code reaches: govulncheck (pinned) against the pinned golang.org/x/vulndb, built offline.
	@db="$$(INDEXDB=$(VULNDB_INDEXDB) hack/vulndb.sh)"; \
		echo "govulncheck $$(go -C tools/govulncheck list -m -f '{{.Version}}' golang.org/x/vuln), $$(go env GOVERSION), database $$db"; \
		start=$$SECONDS; rc=0; $(GOVULNCHECK) -db "file://$$db" ./... || rc=$$?; \
		echo "govulncheck: exit $$rc after $$((SECONDS - start))s"; exit $$rc

##@ Tests
.PHONY: unit
unit: $(HELM) ## Fast tests: no cluster, all packages in parallel.
	go test -short -count=1 ./...

.PHONY: integration
integration: control-plane keda build $(HELM) ## Cluster-backed tests (real apiserver, kcm, scheduler, kwok, Karpenter, Prometheus, KEDA), one package at a time.
	go test -count=1 -p 1 -timeout $(E2E_TIMEOUT) ./test/...

.PHONY: test
test: unit integration ## Everything: unit + integration + e2e. The README's test command; .ci/run runs it.

# Targets are found by grepping the packages' tests for `func Fuzz`, so a new
# one is never left out. A failing target does not stop the others; its
# input is written under the package's testdata/fuzz/<target>/.
.PHONY: fuzz
fuzz: ## Run every Go fuzz target for FUZZTIME (30s) each, one after another (FUZZ=regexp narrows them); make unit runs their seeds.
	@failed=""; \
	for dir in $$(go list -f '{{.Dir}}' ./... | sed 's|^$(CURDIR)|.|'); do \
		for t in $$(cat $$dir/*_test.go 2>/dev/null | sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' | grep -E -- '$(FUZZ)' | sort); do \
			echo "== $$t ($$dir) for $(FUZZTIME)"; \
			go test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) $$dir || failed="$$failed $$dir:$$t"; \
		done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets that failed:$$failed"; exit 1; fi

##@ Local cluster and demo
.PHONY: cluster-up
cluster-up: control-plane ## Start a local control plane in the background and print its KUBECONFIG.
	go run ./test/cmd/localcluster up

.PHONY: cluster-down
cluster-down: ## Stop the cluster started by cluster-up.
	go run ./test/cmd/localcluster down

.PHONY: try
try: control-plane build $(HELM) ## A local cluster with spillway (simulated GPUs, adapter, controller, Prometheus) left running to try your own YAML on; prints KUBECONFIG, the Prometheus URL and the load endpoint.
	go run ./test/cmd/localcluster try --bin-dir $(BIN)

.PHONY: try-down
try-down: ## Stop everything make try started and remove its state (~/.cache/spillway/try).
	go run ./test/cmd/localcluster try-down

.PHONY: demo
demo: control-plane build $(HELM) ## The seed scenario on a local cluster with simulated GPUs; writes out/demo/.
	go run ./test/cmd/demo --bin-dir $(BIN) --out out/demo

##@ Benchmarks
.PHONY: bench
bench: control-plane keda build ## Go benchmarks (exporter collect+render, adapter serving, placement, schedules), then the adapter under 200 req/s on a real cluster, and KEDA side by side on the same series: latency, reaction to a load step, replicas through outages (out/bench/peers.md).
	go test -run '^$$' -bench . -benchmem ./pkg/... ./cmd/...
	go run ./test/bench/adaptercluster --bin-dir $(BIN)

.PHONY: bench-fleet
bench-fleet: control-plane build ## The adapter reading a synthetic fleet of 20,000 to 200,000 series through Thanos Query over two Prometheus shards; writes out/bench/fleet.md (FLEET_ARGS="--sizes 20000,200000 --adapter-memory-limit-mib 320" for two sizes under a memory limit).
	go run ./test/bench/fleet --bin-dir $(BIN) --out out/bench $(FLEET_ARGS)

.PHONY: bench-controller-fleet
bench-controller-fleet: control-plane build ## The controller at fleet size: 50,000 pods in 500 namespaces, 1,000 ResourcePolicies, bursts of 500 selected pods; RSS and webhook latency; writes out/bench/controller-fleet.md (~30 min; CONTROLLER_FLEET_ARGS=--pods=5000 for a quick run).
	go run ./test/bench/controllerfleet --bin-dir $(BIN) --out out/bench $(CONTROLLER_FLEET_ARGS)

.PHONY: bench-tidal
bench-tidal: control-plane build ## Both tidal traces four ways: spillway on SM util, spillway on the queue, baseline HPA, oracle (~75 min; TIDAL_DAY=12m per run; TIDAL_KEDA=true adds KEDA without and with a ResourcePolicy; TIDAL_ARGS="--runs ... --traces ..." plays a subset).
	go run ./test/cmd/demo --bin-dir $(BIN) --out out/bench-tidal --bench --keda=$(TIDAL_KEDA) --day-duration $(TIDAL_DAY) $(TIDAL_ARGS)

##@ Packaging
.PHONY: images
images: ## Print the docker build commands (no Docker engine here).
	@for b in $(BINARIES); do echo "docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --target $$b -t spillway/$$b:$(VERSION) ."; done
