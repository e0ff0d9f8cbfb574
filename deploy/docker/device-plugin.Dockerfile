# gpupack-device-plugin: go-nvml needs cgo (it loads the driver's
# libnvidia-ml.so.1 with dlopen at run time), so the binary links glibc and
# runs on distroless base. The NVIDIA container runtime mounts the driver's
# library and the cards into the container (NVIDIA_DRIVER_CAPABILITIES=utility).
# It runs as root (the kubelet's folders are root's) with every capability
# dropped (see the chart). Build from the repository root:
#   docker build -f deploy/docker/device-plugin.Dockerfile -t ghcr.io/gpupack/gpupack-device-plugin:0.1.0 --build-arg VERSION=0.1.0 .
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
      -o /out/gpupack-device-plugin ./cmd/gpupack-device-plugin

FROM gcr.io/distroless/base-debian12
COPY --from=build /out/gpupack-device-plugin /usr/local/bin/gpupack-device-plugin
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=utility
ENTRYPOINT ["/usr/local/bin/gpupack-device-plugin"]
