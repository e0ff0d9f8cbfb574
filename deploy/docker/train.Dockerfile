# gpupack-train: the simulated training job (see package mock/job). It reads
# and writes its cards through the mock NVML, which imports go-nvml, so it
# needs cgo: the binary links glibc and runs on distroless base. It runs as
# root (no USER): it writes the simulated cards' shared state file, which
# lives on a root-owned hostPath, as a driver's device files are shared by
# every container on the node. Build from the repository root:
#   docker build -f deploy/docker/train.Dockerfile -t ghcr.io/gpupack/gpupack-train:0.1.0 --build-arg VERSION=0.1.0 .
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -trimpath \
      -ldflags "-s -w -X main.Version=${VERSION}" \
      -o /out/gpupack-train ./cmd/gpupack-train

FROM gcr.io/distroless/base-debian12
COPY --from=build /out/gpupack-train /usr/local/bin/gpupack-train
ENTRYPOINT ["/usr/local/bin/gpupack-train"]
