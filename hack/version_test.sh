#!/usr/bin/env bash
# version_test.sh checks hack/version.sh in scratch git repositories: what
# it prints on a tag, after one, before any, dirty and without git, and that
# each is valid semver (what helm requires of the chart's version, with the
# v removed, and krew of a plugin's version) and a valid image tag. make
# verify runs it.
set -euo pipefail
script=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/version.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# semver.org's regular expression, with the v prefix krew and our tags use.
semver='^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?(\+([0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*))?$'
imagetag='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'
fail=0
check() { # check <name> <dir> <want: extended regexp>
  local got
  got=$("$2/hack/version.sh")
  if ! [[ $got =~ $3 ]]; then echo "FAIL $1: got $got, want $3"; fail=1; return; fi
  if ! [[ $got =~ $semver ]]; then echo "FAIL $1: $got is not semver"; fail=1; return; fi
  if ! [[ $got =~ $imagetag ]]; then echo "FAIL $1: $got is not a valid image tag"; fail=1; return; fi
  echo "ok   $1: $got"
}
repo=$tmp/repo
mkdir -p "$repo/hack" && cp "$script" "$repo/hack/" && echo a >"$repo/file"
git() { command git -C "$repo" -c user.name=t -c user.email=t@example.invalid -c commit.gpgsign=false -c tag.gpgsign=false "$@"; }
git init -q
git add . && git commit -qm one
check "no tag" "$repo" '^v0\.0\.0-dev\.g[0-9a-f]{12}$'
echo b >"$repo/file"
check "no tag, dirty" "$repo" '^v0\.0\.0-dev\.g[0-9a-f]{12}-dirty$'
git commit -qam two
git tag not-a-version
check "a tag that is not v*" "$repo" '^v0\.0\.0-dev\.g[0-9a-f]{12}$'
git tag v0.3.0
check "on a tag" "$repo" '^v0\.3\.0$'
git commit -q --allow-empty -m three
check "after a tag" "$repo" '^v0\.3\.0-1-g[0-9a-f]{12}$'
git tag -a -m rc v0.4.0-rc.1
check "on an annotated pre-release tag" "$repo" '^v0\.4\.0-rc\.1$'
plain=$tmp/plain
mkdir -p "$plain/hack" && cp "$script" "$plain/hack/"
check "no git" "$plain" '^v0\.0\.0-dev$'
exit $fail
