# gpupack-extender: pure Go (no cgo), on a distroless static base as an
# unprivileged user. Build from the repository root:
#   docker build -f deploy/docker/extender.Dockerfile -t ghcr.io/gpupack/gpupack-extender:v0.3.0 --build-arg VERSION=v0.3.0 .
# or make images, which passes VERSION (from git tags) and the OCI labels.
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS TARGETARCH VERSION=v0.0.0-dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X github.com/gpupack/gpupack/internal/version.Version=${VERSION}" \
      -o /out/gpupack-extender ./cmd/gpupack-extender

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gpupack-extender /usr/local/bin/gpupack-extender
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/gpupack-extender"]
