#!/usr/bin/env bash
# krew.sh packages `kubectl inspect gpushare` as krew wants it and checks the
# result with krew's own code (sigs.k8s.io/krew, pinned in test/tools/krew):
#
#   krew.sh archive <binary> <os> <arch> <dir>
#       <dir>/kubectl-inspect-gpushare_<os>_<arch>.tar.gz: the binary and
#       LICENSE, reproducibly (sorted, owner 0, mtime of the last commit).
#   krew.sh manifest <version> <uri-base> <dir>
#       <dir>/inspect-gpushare.yaml: the krew plugin manifest, one platform
#       per archive in <dir>, each with the archive's real sha256 and
#       <uri-base>/<archive> as its download.
#   krew.sh validate <manifest> <dir>
#       validate-krew-manifest on it: krew's structural checks, then, for
#       each platform, `kubectl krew install --manifest` into a scratch
#       KREW_ROOT, which checks the sha256, unpacks the archive and links the
#       bin, and a LICENSE among the installed files. The validator would
#       download each uri; a kubectl stand-in on its PATH runs the pinned
#       krew with --archive=<dir>/<that platform's archive> instead, so that
#       it runs offline on the archives just built, before they are uploaded.
#   krew.sh check
#       all three on sample archives (a stand-in binary for each platform):
#       make verify runs it, so that a broken template or archive layout
#       fails CI rather than the release.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tool=$root/test/tools/tool.sh
plugin=inspect-gpushare
binary=kubectl-inspect-gpushare

archive() {
  local bin=$1 os=$2 arch=$3 dir=$4
  local stage
  stage=$(mktemp -d)
  install -m 0755 "$bin" "$stage/$binary"
  install -m 0644 "$root/LICENSE" "$stage/LICENSE"
  local mtime=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
  mkdir -p "$dir"
  tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -cf - "$binary" LICENSE |
    gzip -9n >"$dir/${binary}_${os}_${arch}.tar.gz"
  rm -rf "$stage"
}

manifest() {
  local version=$1 base=$2 dir=$3
  local archives=("$dir/${binary}"_*_*.tar.gz)
  [ -e "${archives[0]}" ] || { echo "krew.sh: no ${binary}_<os>_<arch>.tar.gz in $dir" >&2; exit 1; }
  {
    cat <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: $plugin
spec:
  version: $version
  homepage: https://github.com/gpupack/gpupack
  shortDescription: Show shared GPU memory allocated per node and card
  description: |
    Shows the GPU memory (aliyun.com/gpu-mem) allocated on each node and
    card of a cluster shared with gpupack or gpushare: cards from the
    gpupack device plugin's inventory (or gpushare's gpu-count), shares
    from the annotations the scheduler extender writes. -d adds each
    card's model and health, each pod's share, and the memory in use and
    utilisation the gpupack device plugin measures. The same command and
    output as gpushare's kubectl-inspect-gpushare.
  caveats: |
    Needs to list nodes and pods; -d also reads the gpupack device
    plugin's /metrics through the API server's pod proxy (--live=false
    skips that).
  platforms:
YAML
    local a name os arch sum
    for a in "${archives[@]}"; do
      name=$(basename "$a")
      os=${name#"${binary}_"}; os=${os%%_*}
      arch=${name%.tar.gz}; arch=${arch##*_}
      sum=$(sha256sum "$a" | cut -d' ' -f1)
      cat <<YAML
  - selector:
      matchLabels:
        os: $os
        arch: $arch
    uri: $base/$name
    sha256: $sum
    bin: $binary
    files:
    - from: $binary
      to: .
    - from: LICENSE
      to: .
YAML
    done
  } >"$dir/$plugin.yaml"
}

validate() {
  local manifest=$1 dir
  dir=$(cd "$2" && pwd)
  local shim
  shim=$(mktemp -d)
  # The validator runs `kubectl krew install --manifest <file> -v=4` with
  # only KREW_ROOT, KREW_OS, KREW_ARCH and PATH set.
  cat >"$shim/kubectl" <<SH
#!/usr/bin/env bash
[ "\$1" = krew ] || { echo "kubectl stand-in: only krew" >&2; exit 2; }
shift
exec "$("$tool" --path krew)" "\$@" --archive="$dir/${binary}_\${KREW_OS}_\${KREW_ARCH}.tar.gz"
SH
  chmod +x "$shim/kubectl"
  PATH=$shim:$PATH "$tool" validate-krew-manifest -manifest "$manifest"
  rm -rf "$shim"
}

check() {
  local dir
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  printf '#!/bin/sh\necho sample\n' >"$dir/bin"
  local p
  for p in linux/amd64 linux/arm64 darwin/amd64 darwin/arm64; do
    archive "$dir/bin" "${p%/*}" "${p#*/}" "$dir/out"
  done
  manifest v0.0.0-sample https://example.invalid/releases/download/v0.0.0-sample "$dir/out"
  validate "$dir/out/$plugin.yaml" "$dir/out"
}

cmd=${1:-}
shift || true
case $cmd in
archive) archive "$@" ;;
manifest) manifest "$@" ;;
validate) validate "$@" ;;
check) check ;;
*) echo "usage: krew.sh archive|manifest|validate|check ..." >&2; exit 2 ;;
esac
