#!/usr/bin/env bash
# tool.sh runs a pinned tool: test/tools/<module>/tools.go imports its
# command's package, and that module's go.mod pins the version. The tool is
# built once per version into the cache the local cluster's binaries use
# ($GPUPACK_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/gpupack), as
# <command>-<version>/<command>, and then run with the remaining arguments.
#
#   test/tools/tool.sh helm lint deploy/chart/gpupack
#   test/tools/tool.sh staticcheck ./...
#   test/tools/tool.sh actionlint
#   test/tools/tool.sh validate-krew-manifest -manifest inspect-gpushare.yaml
#   test/tools/tool.sh --path staticcheck   # build if needed, print the path
#
# <command> is the last element of the imported package's path.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
go=${GO:-go}
print=
if [ "${1:-}" = --path ]; then print=1; shift; fi
name=${1:?usage: tool.sh [--path] <command> [args...]}
shift

# The module whose tools.go imports .../<name>.
pkg='' dir=''
for f in "$here"/*/tools.go; do
  p=$(sed -n "s|^\(import \)\?[[:space:]]*_ \"\(.*/$name\)\"\$|\2|p" "$f")
  if [ -n "$p" ]; then pkg=$p dir=$(dirname "$f"); break; fi
done
if [ -z "$pkg" ]; then
  echo "tool.sh: no test/tools/*/tools.go imports a command named $name" >&2
  exit 2
fi
version=$(cd "$dir" && "$go" list -f '{{.Module.Version}}' "$pkg")
cache=${GPUPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpupack}
bin=$cache/$name-$version/$name

if [ ! -x "$bin" ]; then
  ldflags="-s -w"
  case $name in
  helm)
    # The same link-time settings as helm's own Makefile: its version, and
    # the Kubernetes version `helm template` and `helm lint` assume by
    # default (the minor of the client-go helm is built with).
    kminor=$(cd "$dir" && "$go" list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
    ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor"
    ;;
  esac
  mkdir -p "$(dirname "$bin")"
  echo "building $name $version into $(dirname "$bin") (once; a minute or two on 2 cores)..." >&2
  tmp=$(mktemp "$bin.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  (cd "$dir" && CGO_ENABLED=0 "$go" build -trimpath -o "$tmp" -ldflags "$ldflags" "$pkg")
  mv "$tmp" "$bin"
  trap - EXIT
fi
if [ -n "$print" ]; then
  echo "$bin"
  exit 0
fi

case $name in
helm)
  # helm reads and writes nothing of the user's: no repositories, plugins
  # or registry logins are needed to lint, render and package a local chart.
  export HELM_CACHE_HOME=$cache/helm-home/cache HELM_CONFIG_HOME=$cache/helm-home/config HELM_DATA_HOME=$cache/helm-home/data
  ;;
esac
exec "$bin" "$@"
