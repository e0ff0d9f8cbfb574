# gpupack: make help lists the targets.
SHELL := /usr/bin/env bash
GO    ?= go
PKGS  := ./...
BIN   := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/gpupack/gpupack/extender.Version=$(VERSION) -X main.Version=$(VERSION)
FUZZTIME ?= 30s
BENCHTIME ?= 1s
TRACE ?= ../shared/traces/openb
# go-nvml's cgo bindings name deprecated NVML calls; the warnings are theirs.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: help build test unit e2e node-deps demo throughput verify fmt lint bench fuzz clean manifests sim

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build the binaries into bin/ (the extender without cgo; the node side needs it for go-nvml)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/gpupack-extender ./cmd/kubectl-inspect-gpushare
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/gpupack-device-plugin ./cmd/gpupack-train

test: unit e2e ## run every test: unit tests, then the end-to-end tests on a local cluster

unit: ## unit tests with the race detector: the product's, then the kubelet device-manager test in test/
	$(GO) test -race -count=1 $(PKGS)
	cd test && $(GO) test -race -count=1 ./devicemanager/...

e2e: node-deps ## end-to-end tests on a local cluster, simulated nodes, then a real node as root (the first run builds the Kubernetes components into the cache: several minutes each)
	cd test && $(GO) test -p 1 -count=1 -timeout 60m -v ./e2e/...

# What a real node needs from Debian's packages: the container runtime, the
# CNI plugins, iptables for kube-proxy.
NODE_DEPS := containerd runc containernetworking-plugins iptables conntrack

node-deps: ## as root with apt-get: install what real nodes need (containerd, runc, CNI plugins, iptables) where missing
	@if [ "$$(id -u)" != 0 ]; then echo "node-deps: not root: the real-node tests will say why they skip"; \
	elif ! command -v apt-get >/dev/null; then echo "node-deps: no apt-get: install $(NODE_DEPS) yourself for real nodes"; \
	else missing=$$(for p in $(NODE_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then echo "node-deps: installing" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; fi

throughput: ## schedule 2,000 GPU pods on 1,000 nodes through kube-scheduler with and without the extender; pods/s and ratio
	cd test && $(GO) test -run '^$$' -bench Throughput -benchtime 1x -timeout 60m -v ./perf/

demo: node-deps ## bring a local GPU-sharing cluster up (as root, with a real node too), run a sample training workload, print where it went; stays up until Ctrl-C
	cd test && $(GO) run ./cmd/gpupack-demo

# helm, pinned by test/tools/helm and built into the cache on first use.
HELM     := test/tools/helm/helm.sh
CHART    := deploy/chart/gpupack
MANIFEST := deploy/manifests/gpupack.yaml
render-manifests = { echo '\# Generated from $(CHART) with deploy/manifests/values.yaml by make manifests: edit the chart, not this file.'; \
	$(HELM) template gpupack $(CHART) --namespace kube-system -f deploy/manifests/values.yaml; }

manifests: ## render the static manifests (deploy/manifests/gpupack.yaml) from the Helm chart
	@$(render-manifests) > $(MANIFEST)

verify: ## check gofmt, go vet, go mod tidy, the import rules each doc.go states, helm lint and that the static manifests are what the chart renders
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -count=1 ./internal/layout/
	$(GO) mod tidy -diff
	cd test && $(GO) vet ./... && $(GO) mod tidy -diff
	cd test/tools/etcd && $(GO) mod tidy -diff
	cd test/tools/helm && $(GO) mod tidy -diff
	$(HELM) lint --strict $(CHART)
	@$(render-manifests) | diff -u $(MANIFEST) - || { echo "$(MANIFEST) is not what the chart renders: run make manifests"; exit 1; }
	@# the extender and the kubectl plugin stay pure Go: they must build without cgo (no go-nvml)
	CGO_ENABLED=0 $(GO) build ./contract/... ./extender/... ./cmd/gpupack-extender ./inspect/... ./cmd/kubectl-inspect-gpushare

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

lint: verify ## alias of verify (no external linter is vendored)

bench: ## run the benchmarks (BENCHTIME=1s)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

sim: ## replay the openb trace (../shared/traces) through the policies: POLICY=default WORKLOAD=default SEEDS=42-51, outputs in bin/sim/<workload>
	CGO_ENABLED=0 $(GO) run ./cmd/gpupack-sim --nodes $(TRACE)/openb_node_list_gpu_node.csv --pods $(TRACE)/openb_pod_list_$(or $(WORKLOAD),default).csv --policy $(or $(POLICY),default) --seeds $(or $(SEEDS),42-51) --out $(BIN)/sim/$(or $(WORKLOAD),default)

fuzz: ## run each fuzz target for FUZZTIME (30s)
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean: ## remove build outputs
	rm -rf $(BIN)
