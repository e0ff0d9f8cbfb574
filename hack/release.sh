#!/usr/bin/env bash
# release.sh writes a release of this checkout into $OUT (make release sets
# it, and VERSION, RELEASE_URL, GO): see make help and the README's
# Releases section.
#
#   <command>_linux_<arch>       the four commands for linux/amd64 and arm64
#   kubectl-inspect-gpushare_<os>_<arch>.tar.gz
#                                the kubectl plugin as krew wants it (binary
#                                and LICENSE), for linux and darwin
#   inspect-gpushare.yaml        its krew plugin manifest, validated by krew
#   gpupack-<chart version>.tgz  the chart (version: VERSION without the v,
#                                appVersion: VERSION, so images default to it)
#   gpupack.yaml                 the static manifests rendered from that chart
#   SHA256SUMS                   sha256sum -c SHA256SUMS checks the others
#
# The device plugin and gpupack-train need cgo (go-nvml); for the other
# architecture they are built with Debian's cross compiler
# (gcc-aarch64-linux-gnu on amd64, gcc-x86-64-linux-gnu on arm64), which is
# installed with apt-get where it is missing and this runs as root. go-nvml
# loads libnvidia-ml with dlopen at run time, so no NVIDIA library or header
# is needed to build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
: "${VERSION:?}" "${RELEASE_URL:?}" "${OUT:?}"
semver='^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$'
if ! [[ $VERSION =~ $semver ]]; then
  echo "release: VERSION=$VERSION: want v<major>.<minor>.<patch>[-<pre-release>] (e.g. v0.3.0), as hack/version.sh prints" >&2
  exit 2
fi
go=${GO:-go}
chart_version=${VERSION#v}
arches=(amd64 arm64)
krew_platforms=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64)
ldflags="-s -w -X github.com/gpupack/gpupack/internal/version.Version=$VERSION"
host=$("$go" env GOHOSTARCH)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

rm -rf "$OUT"
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# cc prints the C compiler for linux/<arch>, installing Debian's cross
# compiler where it is missing and we are root.
cc() {
  local arch=$1 triplet pkg
  if [ "$arch" = "$host" ]; then echo "${CC:-gcc}"; return; fi
  case $arch in
  arm64) triplet=aarch64-linux-gnu pkg=gcc-aarch64-linux-gnu ;;
  amd64) triplet=x86_64-linux-gnu pkg=gcc-x86-64-linux-gnu ;;
  *) echo "release: no cross compiler known for $arch" >&2; return 1 ;;
  esac
  if ! command -v "$triplet-gcc" >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "release: installing $pkg (the C cross compiler for linux/$arch)" >&2
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" libc6-dev-"$arch"-cross >&2
    else
      echo "release: $triplet-gcc is missing: install Debian's $pkg (apt-get install $pkg), or run as root to have it installed" >&2
      return 1
    fi
  fi
  echo "$triplet-gcc"
}

for arch in "${arches[@]}"; do
  compiler=$(cc "$arch")
  for cmd in gpupack-extender kubectl-inspect-gpushare; do
    echo "release: $cmd linux/$arch" >&2
    CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$go" build -trimpath -ldflags "$ldflags" -o "$OUT/${cmd}_linux_$arch" "./cmd/$cmd"
  done
  for cmd in gpupack-device-plugin gpupack-train; do
    echo "release: $cmd linux/$arch (cgo, $compiler)" >&2
    CGO_ENABLED=1 CC=$compiler GOOS=linux GOARCH=$arch "$go" build -trimpath -ldflags "$ldflags" -o "$OUT/${cmd}_linux_$arch" "./cmd/$cmd"
  done
done

# Every command reports the version (those that run here).
for cmd in gpupack-extender kubectl-inspect-gpushare gpupack-device-plugin gpupack-train; do
  got=$("$OUT/${cmd}_linux_$host" --version)
  if [ "$got" != "$cmd version $VERSION" ]; then
    echo "release: $cmd --version says \"$got\", want \"$cmd version $VERSION\"" >&2
    exit 1
  fi
done

# The kubectl plugin for krew: archives, the manifest, krew's validation.
for p in "${krew_platforms[@]}"; do
  os=${p%/*} arch=${p#*/}
  bin=$OUT/kubectl-inspect-gpushare_${os}_$arch
  if [ ! -e "$bin" ]; then
    echo "release: kubectl-inspect-gpushare $os/$arch" >&2
    bin=$work/kubectl-inspect-gpushare_${os}_$arch
    CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$go" build -trimpath -ldflags "$ldflags" -o "$bin" ./cmd/kubectl-inspect-gpushare
  fi
  hack/krew.sh archive "$bin" "$os" "$arch" "$OUT"
done
hack/krew.sh manifest "$VERSION" "$RELEASE_URL" "$OUT"
hack/krew.sh validate "$OUT/inspect-gpushare.yaml" "$OUT"

# The chart, and the static manifests rendered from it.
helm=test/tools/helm/helm.sh
"$helm" package deploy/chart/gpupack --version "$chart_version" --app-version "$VERSION" -d "$OUT" >&2
{
  echo "# gpupack $VERSION: rendered from the chart gpupack-$chart_version.tgz with deploy/manifests/values.yaml."
  "$helm" template gpupack "$OUT/gpupack-$chart_version.tgz" --namespace kube-system -f deploy/manifests/values.yaml
} >"$OUT/gpupack.yaml"

(
  cd "$OUT"
  files=()
  for f in *; do [ "$f" = SHA256SUMS ] || files+=("$f"); done
  sha256sum -- "${files[@]}" >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS
)
echo "release: $VERSION in $OUT:" >&2
(cd "$OUT" && ls -l) >&2
