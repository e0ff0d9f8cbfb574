# gpupack: make help lists the targets.
SHELL := /usr/bin/env bash
GO    ?= go
PKGS  := ./...
BIN   := bin
# VERSION comes from git tags (hack/version.sh: v0.3.0 on a tag,
# v0.3.0-5-g<sha> after it, v0.0.0-dev.g<sha> before any; -dirty for
# uncommitted changes): every binary reports it (--version, the extender's
# /version), images are tagged with it and it is the chart's appVersion; the
# chart's version is the same without the v.
VERSION ?= $(shell hack/version.sh)
VERSION := $(VERSION)
LDFLAGS := -X github.com/gpupack/gpupack/internal/version.Version=$(VERSION)
# Where a release's files are downloaded from: the krew manifest's uris.
RELEASE_URL ?= https://github.com/gpupack/gpupack/releases/download/$(VERSION)
RELEASE_DIR ?= $(BIN)/release
# The images: make images builds them with docker buildx.
REGISTRY  ?= ghcr.io/gpupack
PLATFORMS ?= linux/$(shell $(GO) env GOARCH)
# Where buildx puts them: --load (into the local engine; one platform), --push
# (PUSH=1), or e.g. --output=type=cacheonly to build and keep nothing.
IMAGE_OUTPUT ?= $(if $(PUSH),--push,--load)
FUZZTIME ?= 30s
BENCHTIME ?= 1s
TRACE ?= ../shared/traces/openb
# go-nvml's cgo bindings name deprecated NVML calls; the warnings are theirs.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: help build test unit e2e gpu-check node-deps test-deps demo throughput verify fmt lint bench fuzz clean manifests sim release images

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build the binaries into bin/ (the extender without cgo; the node side needs it for go-nvml)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/gpupack-extender ./cmd/kubectl-inspect-gpushare
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/gpupack-device-plugin ./cmd/gpupack-train

test: unit e2e ## run every test: unit tests, then the end-to-end tests on a local cluster

unit: test-deps ## unit tests with the race detector: the product's, then test/'s that need no cluster (the kubelet device manager, the dashboard's queries)
	$(GO) test -race -count=1 $(PKGS)
	cd test && $(GO) test -race -count=1 ./devicemanager/... ./monitoring/...

gpu-check: ## on a node with NVIDIA cards, as root: the device plugin on the real cards (our nvml over libnvidia-ml) under the kubelet's device-manager code, with CUDA jobs holding their shares (test/devicemanager TestRealCards)
	@mkdir -p $(BIN)
	cd test && $(GO) build -o ../$(BIN)/cudajob ./cmd/cudajob
	cd test && GPUPACK_REAL_NVML=1 GPUPACK_CUDA_JOB=$(abspath $(BIN))/cudajob $(GO) test -count=1 -v -run TestRealCards ./devicemanager/

# The two e2e packages run one after the other (each brings a cluster up),
# but their test binaries are compiled at once: go test -p 1 would compile
# them one at a time too, on one core. Each runs in its package's folder, as
# go test runs it.
E2E_BIN := $(abspath $(BIN))/e2e
e2e: node-deps ## end-to-end tests on a local cluster, simulated nodes, then a real node as root (the first run builds the Kubernetes components into the cache: several minutes each)
	@mkdir -p $(E2E_BIN)
	cd test && $(GO) test -c -o $(E2E_BIN)/ ./e2e/ ./e2e/realnode/
	cd test/e2e && $(E2E_BIN)/e2e.test -test.count=1 -test.timeout 60m -test.v
	cd test/e2e/realnode && $(E2E_BIN)/realnode.test -test.count=1 -test.timeout 60m -test.v

# apt-install installs, as root with apt-get, those of Debian's packages $(1)
# that are missing; otherwise target $(2) says what to install, and $(3).
define apt-install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "$(2): not root: install" $$missing "yourself; $(3)"; \
	elif ! command -v apt-get >/dev/null; then echo "$(2): no apt-get: install" $$missing "yourself; $(3)"; \
	else echo "$(2): installing" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi
endef

# What a real node needs from Debian's packages: the container runtime, the
# CNI plugins, iptables for kube-proxy.
NODE_DEPS := containerd runc containernetworking-plugins iptables conntrack
# What the unit tests need: GLPK's solver for the simulator's bound (sim/bound.go).
TEST_DEPS := glpk-utils

node-deps: ## as root with apt-get: install what real nodes need (containerd, runc, CNI plugins, iptables) where missing
	$(call apt-install,$(NODE_DEPS),node-deps,the real-node tests will say why they skip)

test-deps: ## as root with apt-get: install what the unit tests need (GLPK's glpsol, for the simulator's bound) where missing
	$(call apt-install,$(TEST_DEPS),test-deps,the bound's tests skip without it (and fail where CI=true))

throughput: ## schedule PODS GPU pods (2000) on NODES nodes (1000) through kube-scheduler with and without the extender; pods/s, ratio, extender latencies and memory; CPUPROFILE=FILE also writes the extender's CPU profile (FILE.1, FILE.2, ...)
	cd test && GPUPACK_THROUGHPUT_NODES=$(NODES) GPUPACK_THROUGHPUT_PODS=$(PODS) GPUPACK_THROUGHPUT_CPUPROFILE=$(if $(CPUPROFILE),$(abspath $(CPUPROFILE))) $(GO) test -run '^$$' -bench Throughput -benchtime 1x -timeout 180m -v ./perf/

demo: node-deps ## bring a local GPU-sharing cluster up (as root, with a real node too), run a sample training workload, print where it went; stays up until Ctrl-C
	cd test && $(GO) run ./cmd/gpupack-demo

# The tools make verify and make release run, each pinned by a module of
# its own in test/tools/<name> and built into the cache ($GPUPACK_CACHE, else
# ~/.cache/gpupack) on first use by test/tools/tool.sh.
TOOL     := test/tools/tool.sh
HELM     := $(TOOL) helm
CHART    := deploy/chart/gpupack
MANIFEST := deploy/manifests/gpupack.yaml
render-manifests = { echo '\# Generated from $(CHART) with deploy/manifests/values.yaml by make manifests: edit the chart, not this file.'; \
	$(HELM) template gpupack $(CHART) --namespace kube-system -f deploy/manifests/values.yaml; }

manifests: ## render the static manifests (deploy/manifests/gpupack.yaml) from the Helm chart
	@$(render-manifests) > $(MANIFEST)

verify: ## check gofmt, go vet, go mod tidy (every module), the import rules each doc.go states, make lint, helm lint, the static manifests, the krew packaging
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -count=1 ./internal/layout/
	$(GO) mod tidy -diff
	cd test && $(GO) vet ./... && $(GO) mod tidy -diff
	@set -e; for m in test/tools/*/go.mod; do echo "cd $${m%/go.mod} && $(GO) mod tidy -diff"; (cd $${m%/go.mod} && $(GO) mod tidy -diff); done
	@$(MAKE) --no-print-directory lint
	hack/version_test.sh
	hack/krew.sh check
	$(HELM) lint --strict $(CHART)
	@$(render-manifests) | diff -u $(MANIFEST) - || { echo "$(MANIFEST) is not what the chart renders: run make manifests"; exit 1; }
	@# the extender and the kubectl plugin stay pure Go: they must build without cgo (no go-nvml)
	CGO_ENABLED=0 $(GO) build ./contract/... ./extender/... ./cmd/gpupack-extender ./inspect/... ./cmd/kubectl-inspect-gpushare

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

lint: ## staticcheck (pinned in test/tools) over the product and the test module, actionlint over .github/workflows
	$(TOOL) staticcheck $(PKGS)
	cd test && ../$(TOOL) staticcheck ./...
	$(TOOL) actionlint

# The device plugin and gpupack-train need cgo (go-nvml): for the other
# architecture hack/release.sh builds them with Debian's C cross compiler
# (gcc-aarch64-linux-gnu on amd64), installing it with apt-get where it is
# missing and we are root, as node-deps does. go-nvml loads libnvidia-ml
# with dlopen at run time: no NVIDIA library is needed to build.
release: ## write a release into bin/release (VERSION from git tags): binaries for linux/amd64 and arm64, the kubectl plugin's krew archives and manifest (validated by krew), the chart, SHA256SUMS; see the README's Releases
	VERSION=$(VERSION) RELEASE_URL=$(RELEASE_URL) OUT=$(RELEASE_DIR) GO=$(GO) hack/release.sh

# make images needs Docker with buildx (the tests build their images without
# one: test/images). The binaries get VERSION, the images the OCI labels.
images: ## build the images with docker buildx, tagged VERSION (PLATFORMS=linux/amd64,linux/arm64 PUSH=1 pushes them to REGISTRY)
	@set -e; for c in extender device-plugin train; do \
	  echo "image $(REGISTRY)/gpupack-$$c:$(VERSION) for $(PLATFORMS)"; \
	  docker buildx build -f deploy/docker/$$c.Dockerfile --platform $(PLATFORMS) --build-arg VERSION=$(VERSION) \
	    --label org.opencontainers.image.version=$(VERSION) --label org.opencontainers.image.revision=$$(git rev-parse HEAD) \
	    --label org.opencontainers.image.source=https://github.com/gpupack/gpupack --label org.opencontainers.image.licenses=Apache-2.0 \
	    -t $(REGISTRY)/gpupack-$$c:$(VERSION) $(IMAGE_OUTPUT) . ; \
	done

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
