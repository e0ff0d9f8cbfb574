#!/usr/bin/env bash
# helm.sh runs the helm this module pins, building it once into the cache
# the local cluster's binaries use ($GPUPACK_CACHE, else
# ${XDG_CACHE_HOME:-~/.cache}/gpupack). Arguments go to helm.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
go=${GO:-go}
version=$(cd "$here" && "$go" list -m -f '{{.Version}}' helm.sh/helm/v3)
cache=${GPUPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpupack}
bin=$cache/helm-$version/helm
if [ ! -x "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  echo "building helm $version into $(dirname "$bin") (once; about two minutes on 2 cores)..." >&2
  tmp=$(mktemp "$bin.XXXXXX")
  # The same link-time settings as helm's own Makefile: its version, and the
  # Kubernetes version `helm template` and `helm lint` assume by default (the
  # minor of the client-go helm is built with).
  kminor=$(cd "$here" && "$go" list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
  (cd "$here" && CGO_ENABLED=0 "$go" build -trimpath -o "$tmp" -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$version \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor" \
    helm.sh/helm/v3/cmd/helm)
  mv "$tmp" "$bin"
fi
# helm reads and writes nothing of the user's: no repositories, plugins or
# registry logins are needed to lint and render a local chart.
export HELM_CACHE_HOME=$cache/helm-home/cache HELM_CONFIG_HOME=$cache/helm-home/config HELM_DATA_HOME=$cache/helm-home/data
exec "$bin" "$@"
