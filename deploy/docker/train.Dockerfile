# gpupack-train: the simulated training job (see package mock/job). It reads
# and writes its cards through the mock NVML, which imports go-nvml, so it
# needs cgo: the binary links glibc and runs on distroless base. It runs as
# root (no USER): it writes the simulated cards' shared state file, which
# lives on a root-owned hostPath, as a driver's device files are shared by
# every container on the node. Build from the repository root:
#   docker build -f deploy/docker/train.Dockerfile -t ghcr.io/gpupack/gpupack-train:v0.3.0 --build-arg VERSION=v0.3.0 .
# or make images, which passes VERSION (from git tags) and the OCI labels.
# For another architecture (docker buildx --platform linux/arm64) the build
# stage runs natively and compiles with Debian's C cross compiler: go-nvml
# loads libnvidia-ml at run time, so no NVIDIA library is needed to build.
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS TARGETARCH BUILDARCH VERSION=v0.0.0-dev
RUN if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
      case "$TARGETARCH" in arm64) pkg=gcc-aarch64-linux-gnu ;; amd64) pkg=gcc-x86-64-linux-gnu ;; \
        *) echo "no C cross compiler known for $TARGETARCH" >&2; exit 1 ;; esac; \
      apt-get update && apt-get install -y --no-install-recommends "$pkg" "libc6-dev-$TARGETARCH-cross" && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    cc=gcc; if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
      case "$TARGETARCH" in arm64) cc=aarch64-linux-gnu-gcc ;; amd64) cc=x86_64-linux-gnu-gcc ;; esac; fi; \
    CGO_ENABLED=1 CC=$cc GOOS=$TARGETOS GOARCH=$TARGETARCH CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -trimpath \
      -ldflags "-s -w -X github.com/gpupack/gpupack/internal/version.Version=${VERSION}" \
      -o /out/gpupack-train ./cmd/gpupack-train

FROM gcr.io/distroless/base-debian12
COPY --from=build /out/gpupack-train /usr/local/bin/gpupack-train
ENTRYPOINT ["/usr/local/bin/gpupack-train"]
